"""Experiment `constrained`: every method on one problem at an equal sample budget, each method in its own Ray actor.

    raylab run experiments/alm_ncqp.yaml                       # all methods, 6000 samples each
    raylab run experiments/alm_ncqp.yaml samples=40000 problem.dim=50
    raylab tune experiments/alm_ncqp.yaml                      # the sweep over alm.eta, alm.tau, alm.beta, alm.M_y

Each actor (`raylab.constrained.actors.MethodWorker`) owns one optimizer and its stationarity meter; the driver
advances them all to the next log point in parallel and logs one row with every method's metrics
(`<method>_stationarity`, `<method>_infeasibility`, ...). A step (STEP_NAME) is one log point: `log_points`
steps per run, `checkpoint_every` counts them, and a checkpoint holds every worker's state dict. A method
whose iterate turns non-finite ends the run as diverged at that log point. Figures: stationarity.png and
infeasibility.png against samples.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raylab.config import RunConfig, Section
from raylab.constrained import COUNTS
from raylab.plots import plot_lines

STEP_NAME = "log point"
Method = Literal["ssl_alm", "storm_alm", "prox_alm", "penalty", "sgda"]
ROW_KEYS = (*COUNTS, "objective", "infeasibility", "stationarity", "kkt", "y_norm", "safeguard_resets")
QP_KINDS = ("nonconvex_qp", "sampled_constraint_qp")


class ProblemConfig(Section):
    kind: Literal["nonconvex_qp", "sampled_constraint_qp", "fair_logistic", "hs44", "hs35"] = "nonconvex_qp"
    dim: int = Field(20, ge=2)
    constraints: int = Field(5, ge=1, description="rows of A (QPs)")
    X: Literal["box", "simplex"] = "box"
    m: float = Field(1.0, ge=0, description="QP: most negative eigenvalue of Q is -m")
    M: float = Field(10.0, gt=0, description="QP: largest eigenvalue of Q")
    noise: float = Field(0.1, ge=0, description="QP and HS: gradient noise level")
    constraint_noise: float = Field(0.2, ge=0, description="sampled_constraint_qp: noise of A(zeta), b(zeta)")
    n: int = Field(2000, ge=4, description="fair_logistic: data points")
    batch: int = Field(16, ge=1, description="fair_logistic: minibatch")
    stochastic_constraint: bool = Field(False, description="fair_logistic: sample the fairness constraint")
    bounds_in_H: bool = Field(False, description="hs44: x >= 0 as rows of H instead of bounds")
    seed: int = Field(0, description="instance seed (the solvers' seed is the run's seed)")

    def check(self) -> None:
        """Cross-field checks, raised from the experiments' Config validators (so the message names the key)."""
        if self.kind in QP_KINDS and self.constraints >= self.dim:
            raise ValueError(f"problem.constraints: must be below problem.dim for a QP "
                             f"(got {self.constraints} >= {self.dim})")

    def spec(self) -> dict:
        """The plain dict `raylab.constrained.make_problem` builds this problem from (it crosses processes)."""
        qp = dict(dim=self.dim, constraints=self.constraints, X=self.X, m=self.m, M=self.M, noise=self.noise,
                  seed=self.seed)
        params = {"nonconvex_qp": qp, "sampled_constraint_qp": {**qp, "constraint_noise": self.constraint_noise},
                  "fair_logistic": dict(n=self.n, dim=self.dim, batch=self.batch,
                                        stochastic_constraint=self.stochastic_constraint, seed=self.seed),
                  "hs44": dict(bounds_in_H=self.bounds_in_H, noise=self.noise), "hs35": dict(noise=self.noise)}
        return {"kind": self.kind, **params[self.kind]}


class AlmHyper(Section):
    """Overrides for ssl_alm, storm_alm and prox_alm; unset keys take the budget-based defaults."""

    eta: float | None = Field(None, ge=0)
    tau: float | None = Field(None, ge=0)
    beta: float | None = Field(None, ge=0, le=1)
    rho: float | None = Field(None, ge=0)
    mu: float | None = Field(None, gt=0)
    M_y: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, le=1, description="storm_alm only")


class PenaltyHyper(Section):
    rho: float | None = Field(None, gt=0)
    tau: float | None = Field(None, gt=0)
    power: float | None = Field(None, ge=0, description="rho_t = rho (1 + t)^power; above 1 is allowed")
    decay: float | None = Field(None, ge=0, description="extra step decay: tau_t gains a factor (1 + t)^-decay")
    average: float | None = Field(None, ge=0, description="report a weighted mean of x, weights ~ t^(average-1) "
                                  "(1: the plain running mean, 0: the last x)")


class SgdaHyper(Section):
    tau: float | None = Field(None, gt=0)
    eta: float | None = Field(None, ge=0)


class Config(RunConfig):
    experiment: Literal["constrained"] = "constrained"
    problem: ProblemConfig = ProblemConfig()
    methods: list[Method] = Field(["ssl_alm", "storm_alm", "prox_alm", "penalty", "sgda"], min_length=1)
    samples: int = Field(6000, ge=10, description="gradient evaluations per method")
    log_points: int = Field(20, ge=1, description="steps of the run (rows after the first)")
    stationarity_mu: float | None = Field(None, gt=0, description="mu of the measure; default 2m (L/4 if convex)")
    alm: AlmHyper = AlmHyper()
    penalty: PenaltyHyper = PenaltyHyper()
    sgda: SgdaHyper = SgdaHyper()

    @model_validator(mode="after")
    def _problem_is_consistent(self):
        self.problem.check()
        return self


def method_hyper(cfg: Config, method: str) -> dict:
    block = cfg.alm if method in ("ssl_alm", "storm_alm", "prox_alm") else getattr(cfg, method)
    hyper = block.model_dump(exclude_none=True)
    if method != "storm_alm":
        hyper.pop("alpha", None)
    return hyper


def run(cfg: Config, ctx) -> dict:
    import ray

    from raylab.constrained.actors import method_workers

    per_method = min(1.0, ray.cluster_resources().get("CPU", 1.0) / len(cfg.methods))
    workers = method_workers(cfg.problem.spec(), {m: method_hyper(cfg, m) for m in cfg.methods}, cfg.samples,
                             cfg.seed, cfg.log_points, cfg.stationarity_mu, ctx.actor_cpus(per_method))

    def states() -> dict:
        return dict(zip(cfg.methods, ray.get([workers[m].state_dict.remote() for m in cfg.methods])))

    def advance(k: int) -> None:
        rows = dict(zip(cfg.methods, ray.get([workers[m].advance.remote(k) for m in cfg.methods])))
        ctx.log({f"{m}_{key}": row[key] for m, row in rows.items() for key in ROW_KEYS}, step=k)

    try:
        completed, state = ctx.resume()
        if state is None:
            advance(0)  # the starting point's row
        else:
            ray.get([workers[m].load_state_dict.remote(state[m]) for m in cfg.methods])
        with ctx.progress(cfg.log_points, desc="constrained", initial=completed) as bar:
            for step in range(completed, cfg.log_points):
                advance(step + 1)
                if ctx.due(step + 1):
                    ctx.checkpoint(step + 1, states())
                bar.update()
        ctx.checkpoint(cfg.log_points, states(), final=True)
    finally:
        for w in workers.values():
            ray.kill(w)
    last = ctx.metrics()[-1]
    summary = {f"{m}_{key}": last[f"{m}_{key}"] for m in cfg.methods for key in ("stationarity", "infeasibility")}
    summary["best_stationarity"] = min(last[f"{m}_stationarity"] for m in cfg.methods)
    summary["best_method"] = min(cfg.methods, key=lambda m: last[f"{m}_stationarity"])
    return summary


def plot(cfg: Config, ctx) -> None:
    rows = ctx.metrics()
    for key, ylabel in (("stationarity", "mu ||p - xbar(p)||, p = z (ALMs) or x"), ("infeasibility", "||Ap - b||")):
        series = {m: ([max(r[f"{m}_samples"], 1) for r in rows], [r[f"{m}_{key}"] for r in rows])
                  for m in cfg.methods}
        plot_lines(ctx.path(f"{key}.png"), series, xlabel="samples (gradient evaluations)", ylabel=ylabel,
                   title=f"{cfg.problem.kind}, {key}", logx=True, logy=True)
