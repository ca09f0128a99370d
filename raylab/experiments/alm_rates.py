"""Experiment `alm_rates`: how many samples SSL-ALM and STORM-ALM need to reach stationarity eps.

    raylab run experiments/alm_rates.yaml
    raylab run experiments/alm_rates.yaml budgets=[1000,2000,4000,8000,16000,32000] seeds=3

For every method, budget T and seed one Ray task runs `solve` with the step sizes the budget prescribes and
reports eps(T): the stationarity mu ||z - xbar(z)|| averaged over the last quarter of the run (the theorems bound
it at a random iterate). The median over seeds gives a curve eps(T); a least-squares fit of log T against
log(1/eps) gives the exponent k in T ~ eps^-k (theory: 4 for ssl_alm, 3 for storm_alm), and interpolating the
curve gives the samples needed for each eps in `eps_targets`. Figure: rates.png, samples against 1/eps, with
eps^-4 and eps^-3 reference lines. Finished tasks are checkpointed, so a resumed run only runs what is missing.
"""
from __future__ import annotations

import math
import statistics
from typing import Literal

from pydantic import Field

from raylab.config import RunConfig
from raylab.constrained import make_optimizer
from raylab.constrained.solve import log_row
from raylab.constrained.stationarity import StationarityMeter
from raylab.experiments.constrained import AlmHyper, ProblemConfig, build_problem
from raylab.results import plot_lines

TAIL_POINTS = 4  # stationarity is averaged over this many log points in the last quarter of each run


class Config(RunConfig):
    experiment: Literal["alm_rates"] = "alm_rates"
    problem: ProblemConfig = ProblemConfig()
    methods: list[Literal["ssl_alm", "storm_alm"]] = Field(["ssl_alm", "storm_alm"], min_length=1)
    budgets: list[int] = Field([500, 1000, 2000, 4000, 8000, 16000], min_length=2)
    seeds: int = Field(2, ge=1)
    eps_targets: list[float] = Field([0.1, 0.05, 0.02, 0.01], min_length=1)
    alm: AlmHyper = AlmHyper()


def tail_stationarity(problem: dict, method: str, samples: int, seed: int, hyper: dict) -> float:
    """Mean stationarity over the last quarter of one run of `samples` gradient evaluations."""
    opt = make_optimizer(build_problem(problem), method, samples, seed, **hyper)
    meter = StationarityMeter(opt.problem)
    checks = [opt.T - i * opt.T // (4 * TAIL_POINTS) for i in reversed(range(TAIL_POINTS))]
    values = []
    for target in checks:
        while opt.t < target:
            opt.step()
        values.append(log_row(opt, meter)["stationarity"])
    return sum(values) / len(values)


def fit_exponent(budgets: list[int], eps: list[float]) -> float:
    """k in T ~ eps^-k: the least-squares slope of log T against log(1/eps)."""
    xs, ys = [-math.log(e) for e in eps], [math.log(t) for t in budgets]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def samples_to_reach(budgets: list[int], eps: list[float], target: float) -> float:
    """Log-log interpolation of the curve eps(T) at `target`; nan when the largest budget does not reach it."""
    for (t0, e0), (t1, e1) in zip(zip(budgets, eps), zip(budgets[1:], eps[1:])):
        if e1 <= target < e0:
            w = math.log(e0 / target) / math.log(e0 / e1)
            return math.exp(math.log(t0) + w * math.log(t1 / t0))
    return float(budgets[0]) if eps[0] <= target else float("nan")


def run(cfg: Config, ctx) -> dict:
    import ray

    budgets = sorted(cfg.budgets)
    jobs = [(m, t, s) for m in cfg.methods for t in budgets for s in range(cfg.seeds)]
    done: dict = {}
    if ctx.resume and (ckpt := ctx.load_checkpoint()):
        done = ckpt[1]
        ctx.truncate_metrics(ckpt[0])
    task = ray.remote(tail_stationarity).options(num_cpus=ctx.actor_cpus(1))
    hyper = cfg.alm.model_dump(exclude_none=True)
    pending = {task.remote(cfg.problem.model_dump(), m, t, cfg.seed + s,
                           {k: v for k, v in hyper.items() if k != "alpha" or m == "storm_alm"}): (m, t, s)
               for (m, t, s) in jobs if f"{m}/{t}/{s}" not in done}
    with ctx.progress(len(jobs), desc="alm_rates", initial=len(done)) as bar:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            m, t, s = pending.pop(ready)
            done[f"{m}/{t}/{s}"] = ray.get(ready)
            ctx.log({"method": m, "samples": t, "seed": s, "stationarity": done[f"{m}/{t}/{s}"]}, step=len(done))
            if ctx.should_checkpoint(len(done)):
                ctx.save_checkpoint(done, len(done))
            bar.update()
    ctx.save_checkpoint(done, len(done))
    return summarize(cfg, ctx, budgets, done)


def summarize(cfg: Config, ctx, budgets: list[int], done: dict) -> dict:
    summary, series = {}, {}
    for m in cfg.methods:
        eps = [statistics.median(done[f"{m}/{t}/{s}"] for s in range(cfg.seeds)) for t in budgets]
        summary[f"{m}_exponent"] = fit_exponent(budgets, eps)
        for target in cfg.eps_targets:
            summary[f"{m}_samples_eps_{target:g}"] = samples_to_reach(budgets, eps, target)
        series[f"{m} (T ~ eps^-{summary[f'{m}_exponent']:.2f})"] = ([1 / e for e in eps], budgets)
        summary[f"{m}_eps"] = eps
    # reference lines through the first method's smallest budget, as the theory's slopes
    start, top = 1 / summary[f"{cfg.methods[0]}_eps"][0], max(x for xs, _ in series.values() for x in xs)
    refs = {f"eps^-{k}": ([start, top], [budgets[0], budgets[0] * (top / start) ** k]) for k in (4, 3)}
    plot_lines(ctx.path("rates.png"), series, xlabel="1 / eps (eps: median stationarity)", ylabel="samples T",
               title="samples needed for stationarity eps", logx=True, logy=True, references=refs)
    return summary
