"""Experiment `alm_rates`: how many samples SSL-ALM and STORM-ALM need to reach stationarity eps.

    raylab run experiments/alm_rates.yaml
    raylab run experiments/alm_rates.yaml budgets=[1000,4000,16000] seeds=2

For every method, budget T and seed one Ray task (`raylab.constrained.actors.tail_stationarity_task`) runs the
method with the step sizes the theorem's schedule gives that budget and reports eps(T), the stationarity
mu ||z - xbar(z)|| averaged over the last quarter of the run (`raylab.constrained.tail_stationarity`). The median
over seeds gives a curve eps(T); `fit_exponent` fits k in T ~ eps^-k (the theorems: 4 for ssl_alm, 3 for
storm_alm), and `samples_to_reach` gives the smallest budget whose eps(T) is <= each eps in `eps_targets`.
Figure: rates.png, samples against 1/eps with eps^-4 and eps^-3 reference lines. A step (STEP_NAME) is one
finished run (method, budget, seed); `checkpoint_every` counts them, so a resumed run only runs what is missing.
"""
from __future__ import annotations

import statistics
from typing import Literal

from pydantic import Field, model_validator

from raylab.config import RunConfig
from raylab.constrained import fit_exponent, samples_to_reach
from raylab.experiments.constrained import AlmHyper, ProblemConfig
from raylab.plots import plot_lines

STEP_NAME = "run"


class Config(RunConfig):
    experiment: Literal["alm_rates"] = "alm_rates"
    problem: ProblemConfig = ProblemConfig()
    methods: list[Literal["ssl_alm", "storm_alm"]] = Field(["ssl_alm", "storm_alm"], min_length=1)
    budgets: list[int] = Field([1000, 4000, 16000, 64000], min_length=2)
    seeds: int = Field(2, ge=1)
    eps_targets: list[float] = Field([0.1, 0.05, 0.02, 0.01], min_length=1)
    alm: AlmHyper = AlmHyper()

    @model_validator(mode="after")
    def _problem_is_consistent(self):
        self.problem.check()
        return self


def method_hyper(cfg: Config, method: str) -> dict:
    hyper = cfg.alm.model_dump(exclude_none=True)
    return {k: v for k, v in hyper.items() if k != "alpha" or method == "storm_alm"}


def run(cfg: Config, ctx) -> dict:
    import ray

    from raylab.constrained.actors import tail_stationarity_task

    jobs = [(m, t, s) for m in cfg.methods for t in sorted(cfg.budgets) for s in range(cfg.seeds)]
    completed, state = ctx.resume()
    done = dict(state or {})
    task = tail_stationarity_task(ctx.actor_cpus(1))
    spec = cfg.problem.spec()
    pending = {task.remote(spec, m, t, cfg.seed + s, method_hyper(cfg, m)): (m, t, s)
               for (m, t, s) in jobs if f"{m}/{t}/{s}" not in done}
    with ctx.progress(len(jobs), desc="alm_rates", initial=len(done)) as bar:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            m, t, s = pending.pop(ready)
            done[f"{m}/{t}/{s}"] = ray.get(ready)
            ctx.log({"method": m, "samples": t, "seed": s, "stationarity": done[f"{m}/{t}/{s}"]}, step=len(done))
            ctx.checkpoint(len(done), done)
            bar.update()
    ctx.checkpoint(len(done), done, final=True)
    summary = {}
    for m, (budgets, eps) in curves(cfg, ctx.metrics()).items():
        summary[f"{m}_exponent"] = fit_exponent(budgets, eps)
        summary[f"{m}_eps"] = eps
        for target in cfg.eps_targets:
            summary[f"{m}_samples_eps_{target:g}"] = samples_to_reach(budgets, eps, target, hold=1)
    return summary


def curves(cfg: Config, rows: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """method -> (budgets, median eps over the seeds logged for each budget), budgets with no finite row left out."""
    out = {}
    for m in cfg.methods:
        budgets, eps = [], []
        for t in sorted(cfg.budgets):
            values = [r["stationarity"] for r in rows if r["method"] == m and r["samples"] == t
                      and r["stationarity"] is not None]
            if values:
                budgets.append(t)
                eps.append(statistics.median(values))
        out[m] = (budgets, eps)
    return out


def plot(cfg: Config, ctx) -> None:
    series = {}
    for m, (budgets, eps) in curves(cfg, ctx.metrics()).items():
        label = f"{m} (T ~ eps^-{fit_exponent(budgets, eps):.2f})" if len(eps) > 1 else m
        series[label] = ([1 / e for e in eps], budgets)
    points = [(x, t) for xs, ts in series.values() for x, t in zip(xs, ts)]
    refs = {}
    if points:  # the theory's slopes through the smallest budget's point
        (x0, t0), top = min(points, key=lambda p: p[1]), max(x for x, _ in points)
        refs = {f"eps^-{k}": ([x0, top], [t0, t0 * (top / x0) ** k]) for k in (4, 3)}
    plot_lines(ctx.path("rates.png"), series, xlabel="1 / eps (eps: median stationarity)", ylabel="samples T",
               title="samples needed for stationarity eps", logx=True, logy=True, references=refs)
