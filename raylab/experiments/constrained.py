"""Experiment `constrained`: every method on one problem at an equal sample budget, each method in its own Ray actor.

    raylab run experiments/alm_ncqp.yaml                       # all methods, 6000 samples each
    raylab run experiments/alm_ncqp.yaml samples=40000 problem.dim=50
    raylab tune experiments/alm_ncqp.yaml                      # the sweep over alm.eta, alm.tau, alm.beta, alm.M_y

Each actor owns one optimizer and its stationarity meter (`MethodWorker`, a plain class: the same object runs
locally in tests); the driver advances them all to the next log point in parallel, logs one row with every
method's metrics (`<method>_stationarity`, `<method>_infeasibility`, ...), and checkpoints their state dicts.
Figures: stationarity.png and infeasibility.png against samples.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from raylab.config import RunConfig, Section
from raylab.constrained import Problem, fair_logistic, make_optimizer, nonconvex_qp, sampled_constraint_qp
from raylab.constrained.solve import log_row
from raylab.constrained.stationarity import StationarityMeter
from raylab.results import plot_lines

Method = Literal["ssl_alm", "storm_alm", "prox_alm", "penalty", "sgda"]
ROW_KEYS = ("samples", "objective", "infeasibility", "stationarity", "kkt", "y_norm", "safeguard_resets")


class ProblemConfig(Section):
    kind: Literal["nonconvex_qp", "sampled_constraint_qp", "fair_logistic"] = "nonconvex_qp"
    dim: int = Field(20, ge=2)
    constraints: int = Field(5, ge=1, description="rows of A (QPs)")
    X: Literal["box", "simplex"] = "box"
    m: float = Field(1.0, ge=0, description="QP: most negative eigenvalue of Q is -m")
    M: float = Field(10.0, gt=0, description="QP: largest eigenvalue of Q")
    noise: float = Field(0.1, ge=0, description="QP: gradient noise level")
    constraint_noise: float = Field(0.2, ge=0, description="sampled_constraint_qp: noise of A(zeta), b(zeta)")
    n: int = Field(2000, ge=4, description="fair_logistic: data points")
    batch: int = Field(16, ge=1, description="fair_logistic: minibatch")
    stochastic_constraint: bool = Field(False, description="fair_logistic: sample the fairness constraint")
    seed: int = Field(0, description="instance seed (the solvers' seed is the run's seed)")


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
    power: float | None = Field(None, ge=0, le=1)


class SgdaHyper(Section):
    tau: float | None = Field(None, gt=0)
    eta: float | None = Field(None, ge=0)


class Config(RunConfig):
    experiment: Literal["constrained"] = "constrained"
    problem: ProblemConfig = ProblemConfig()
    methods: list[Method] = Field(["ssl_alm", "storm_alm", "prox_alm", "penalty", "sgda"], min_length=1)
    samples: int = Field(6000, ge=10, description="gradient evaluations per method")
    log_points: int = Field(20, ge=1)
    stationarity_mu: float | None = Field(None, gt=0, description="mu of the measure; default 2m (L/4 if convex)")
    alm: AlmHyper = AlmHyper()
    penalty: PenaltyHyper = PenaltyHyper()
    sgda: SgdaHyper = SgdaHyper()


def build_problem(cfg: dict) -> Problem:
    """A shipped problem from a ProblemConfig dump (plain data, so it crosses process boundaries)."""
    cfg = ProblemConfig.model_validate(cfg)
    qp = dict(dim=cfg.dim, constraints=cfg.constraints, X=cfg.X, m=cfg.m, M=cfg.M, noise=cfg.noise, seed=cfg.seed)
    if cfg.kind == "nonconvex_qp":
        return nonconvex_qp(**qp)
    if cfg.kind == "sampled_constraint_qp":
        return sampled_constraint_qp(**qp, constraint_noise=cfg.constraint_noise)
    return fair_logistic(n=cfg.n, dim=cfg.dim, batch=cfg.batch, stochastic_constraint=cfg.stochastic_constraint,
                         seed=cfg.seed)


def method_hyper(cfg: Config, method: str) -> dict:
    block = cfg.alm if method in ("ssl_alm", "storm_alm", "prox_alm") else getattr(cfg, method)
    hyper = block.model_dump(exclude_none=True)
    if method != "storm_alm":
        hyper.pop("alpha", None)
    return hyper


class MethodWorker:
    """One method's optimizer and stationarity meter. Ray wraps it as an actor; tests also run it in-process."""

    def __init__(self, problem: dict, method: str, samples: int, seed: int, hyper: dict, log_points: int,
                 stationarity_mu: float | None = None):
        self.problem = build_problem(problem)
        self.opt = make_optimizer(self.problem, method, samples, seed, **hyper)
        self.meter = StationarityMeter(self.problem, stationarity_mu)
        self.log_points = log_points

    def advance(self, log_index: int) -> dict:
        """Steps until log point `log_index` (of `log_points`, evenly spaced in iterations); returns its row."""
        target = math.ceil(log_index * self.opt.T / self.log_points)
        while self.opt.t < target:
            self.opt.step()
        return log_row(self.opt, self.meter)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "meter": self.meter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.meter.load_state_dict(state["meter"])


def run(cfg: Config, ctx) -> dict:
    import ray

    per_method = min(1.0, ray.cluster_resources().get("CPU", 1.0) / len(cfg.methods))
    actor = ray.remote(MethodWorker).options(num_cpus=ctx.actor_cpus(per_method))
    problem = cfg.problem.model_dump()
    workers = {m: actor.remote(problem, m, cfg.samples, cfg.seed, method_hyper(cfg, m), cfg.log_points,
                               cfg.stationarity_mu) for m in cfg.methods}
    start = 0
    if ctx.resume and (ckpt := ctx.load_checkpoint()):
        start, state = ckpt
        ray.get([workers[m].load_state_dict.remote(state[m]) for m in cfg.methods])
        ctx.truncate_metrics(start)
    def states() -> dict:
        return dict(zip(cfg.methods, ray.get([workers[m].state_dict.remote() for m in cfg.methods])))

    with ctx.progress(cfg.log_points, desc="constrained", initial=start) as bar:
        for k in range(start if start == 0 else start + 1, cfg.log_points + 1):
            rows = dict(zip(cfg.methods, ray.get([workers[m].advance.remote(k) for m in cfg.methods])))
            ctx.log({f"{m}_{key}": row[key] for m, row in rows.items() for key in ROW_KEYS}, step=k)
            if ctx.should_checkpoint(k) and k < cfg.log_points:
                ctx.save_checkpoint(states(), k)
            bar.update(k > 0)
    ctx.save_checkpoint(states(), cfg.log_points)
    for w in workers.values():
        ray.kill(w)
    return summarize(cfg, ctx)


def summarize(cfg: Config, ctx) -> dict:
    rows = ctx.metrics()
    for key, ylabel in (("stationarity", "mu ||p - xbar(p)||, p = z (ALMs) or x"), ("infeasibility", "||Ap - b||")):
        series = {m: ([max(r[f"{m}_samples"], 1) for r in rows], [max(r[f"{m}_{key}"], 1e-12) for r in rows])
                  for m in cfg.methods}
        plot_lines(ctx.path(f"{key}.png"), series, xlabel="samples (gradient evaluations)", ylabel=ylabel,
                   title=f"{cfg.problem.kind}, {key}", logx=True, logy=True)
    last = rows[-1]
    summary = {f"{m}_{key}": last[f"{m}_{key}"] for m in cfg.methods for key in ("stationarity", "infeasibility")}
    summary["best_stationarity"] = min(last[f"{m}_stationarity"] for m in cfg.methods)
    summary["best_method"] = min(cfg.methods, key=lambda m: last[f"{m}_stationarity"])
    return summary
