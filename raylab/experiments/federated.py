"""Federated consensus SSL-ALM against FedAvg and FedProx, with intermittently connected agents, on Ray.

    raylab run experiments/federated_alm.yaml                        # the demo: digits, 100 agents, p = 0.1
    raylab run experiments/federated_alm.yaml availability.kind=markov model.name=mlp
    raylab run experiments/federated_alm.yaml --resume runs/federated_alm-...   # after an interruption
    raylab tune experiments/federated_sweep.yaml                     # p, eta, tau, beta, M_y through Ray Tune

The agents are split over `num_actors` Ray actors (one per CPU by default; `single_process: true` runs the same
shards in this process). All methods advance together, one round at a time, and see the same connections.
Every `eval_every` rounds a row goes to metrics.jsonl: per method the mean objective (1/m) sum_i f_i(x_0),
the stationarity ||grad (1/m) sum_i f_i(x_0)||, consensus max_i ||x_i - x_0|| (for the baselines: the largest
distance of a local model from the server model), test accuracy (digits) and the round's participants.
`faults.kill_actor_at_round` kills an agent actor mid-run (ray.kill) to show the run surviving it.
"""
from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field, model_validator

from raylab.config import RunConfig, Section
from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec
from raylab.federated.server import LocalPool, Server, restore, run_rounds, snapshot
from raylab.federated.spec import Hyper, Problem
from raylab.results import plot_lines

METRICS = ("accuracy", "objective", "stationarity", "consensus", "participants")
LABELS = {"ssl_alm": "SSL-ALM", "fedavg": "FedAvg", "fedprox": "FedProx"}


class DataConfig(Section):
    name: Literal["digits", "least_squares", "synthetic"] = "digits"
    num_agents: int = Field(100, ge=1, description="virtual agents (m)")
    alpha: float = Field(0.5, gt=0, description="digits: Dirichlet label skew (small: more skewed)")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    dim: int = Field(5, ge=1, description="least_squares: unknowns; synthetic: features")
    rows: int = Field(20, ge=1, description="least_squares / synthetic: rows per agent")
    heterogeneity: float = Field(1.0, ge=0)
    noise: float = Field(0.1, ge=0)


class ModelConfig(Section):
    name: Literal["least_squares", "logistic", "mlp"] = "logistic"
    hidden: int = Field(32, ge=1, description="mlp: hidden units")
    bias: bool = True


class AvailabilityConfig(Section):
    kind: Literal["bernoulli", "heterogeneous", "markov"] = "bernoulli"
    p: float = Field(0.1, gt=0, le=1, description="probability that an agent is connected in a round")
    p_min: float = Field(0.02, gt=0, le=1, description="heterogeneous: p_i uniform on [p_min, p_max]")
    p_max: float = Field(0.5, gt=0, le=1)
    mean_on: float = Field(5.0, ge=1, description="markov: mean rounds of a connected burst")


class AlmConfig(Section):
    eta: float = Field(0.05, gt=0)
    tau: float = Field(0.05, gt=0)
    beta: float = Field(0.5, gt=0, le=1)
    rho: float = Field(1.0, ge=0)
    mu: float = Field(0.5, ge=0)
    M_y: float | None = Field(1e4, gt=0, description="dual safeguard radius; null: none")
    z_update: Literal["pre", "post"] = "pre"
    server_lr_scale: float | None = Field(None, gt=0, description="server step = scale * tau; null: 1/m")


class BaselineConfig(Section):
    local_steps: int = Field(5, ge=1, le=1000)
    local_lr: float = Field(0.1, gt=0)
    prox_mu: float = Field(0.1, ge=0, description="FedProx's proximal weight")


class FaultConfig(Section):
    kill_actor_at_round: int | None = Field(None, ge=0, description="ray.kill an agent actor before this round")
    actor: int = Field(0, ge=0)


class Config(RunConfig):
    experiment: Literal["federated"] = "federated"
    rounds: int = Field(300, ge=1)
    eval_every: int = Field(5, ge=1, description="rounds between metric rows")
    methods: list[Literal["ssl_alm", "fedavg", "fedprox"]] = Field(["ssl_alm", "fedavg", "fedprox"], min_length=1)
    num_actors: int | None = Field(None, ge=1, description="agent actors; null: one per CPU")
    single_process: bool = Field(False, description="run the shards in this process, without actors")
    batch_size: int | None = Field(16, ge=1, description="samples per agent gradient; null: all (exact)")
    dtype: Literal["float32", "float64"] = "float32"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    availability: AvailabilityConfig = AvailabilityConfig()
    alm: AlmConfig = AlmConfig()
    baselines: BaselineConfig = BaselineConfig()
    faults: FaultConfig = FaultConfig()

    @model_validator(mode="after")
    def _fits_together(self):
        self.problem()                      # raises a one-line ValueError for what fits no other check
        if self.faults.kill_actor_at_round is not None and self.single_process:
            raise ValueError("faults.kill_actor_at_round needs agent actors (single_process: false)")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: listed twice in {self.methods}")
        return self

    def problem(self) -> Problem:
        d, a = self.data, self.availability
        return Problem(data=DataSpec(name=d.name, num_agents=d.num_agents, alpha=d.alpha,
                                     test_fraction=d.test_fraction, dim=d.dim, rows=d.rows,
                                     heterogeneity=d.heterogeneity, noise=d.noise, seed=self.seed),
                       model=self.model.name, hidden=self.model.hidden, bias=self.model.bias,
                       availability=Availability(kind=a.kind, p=a.p, p_min=a.p_min, p_max=a.p_max,
                                                 mean_on=a.mean_on, seed=self.seed),
                       seed=self.seed, dtype=self.dtype)

    def hyper(self) -> Hyper:
        return Hyper(**self.alm.model_dump(), batch_size=self.batch_size, **self.baselines.model_dump())


def run(cfg: Config, ctx) -> dict:
    problem, hyper, methods = cfg.problem(), cfg.hyper(), tuple(cfg.methods)
    threads = torch.get_num_threads()
    if cfg.single_process:
        torch.set_num_threads(1)      # tiny tensors: one thread, as in an actor, avoids synchronisation costs
        pool = LocalPool(problem, hyper, methods, cfg.num_actors or 1)
    else:
        from raylab.federated.simulation import RayPool

        pool = RayPool(problem, hyper, methods, cfg.num_actors, cpus_per_actor=ctx.actor_cpus(1))
    try:
        summary = _train(cfg, ctx, pool, Server(problem, hyper, methods))
    finally:
        torch.set_num_threads(threads)
        if hasattr(pool, "shutdown"):
            pool.shutdown()
    rows = ctx.metrics()
    _plots(ctx, rows, methods, cfg)
    if not ctx.in_trial:
        print(final_table(rows, methods))
    return summary


def _train(cfg: Config, ctx, pool, server: Server) -> dict:
    """Rounds from the start or the last checkpoint to cfg.rounds; returns the summary."""
    methods = server.methods
    start, snap = 0, snapshot(server, pool, 0)
    if ctx.resume and (ckpt := ctx.load_checkpoint()):
        start, snap = ckpt
        restore(server, pool, snap)
        ctx.truncate_metrics(start)
    killed = False
    began = time.perf_counter()

    def step(t: int) -> dict | None:
        nonlocal killed
        if t == cfg.faults.kill_actor_at_round and not killed:
            killed = True
            pool.kill(cfg.faults.actor % len(pool.sizes))
        info = server.round(pool, t)
        if (t + 1) % cfg.eval_every and t + 1 != cfg.rounds:
            return None
        row = {f"{m}_participants": info[m]["participants"] for m in methods}
        for method, metrics in server.evaluate(pool).items():
            row |= {f"{method}_{k}": v for k, v in metrics.items()}
        return row

    with ctx.progress(cfg.rounds, desc=f"federated {cfg.data.name} p={cfg.availability.p}",
                      initial=start) as bar:
        def on_step(done: int, row: dict | None) -> None:
            bar.update()
            if row is not None:
                ctx.log(row, step=done)
                key = "accuracy" if f"{methods[0]}_accuracy" in row else "objective"
                bar.set_postfix({LABELS[m]: f"{row[f'{m}_{key}']:.3g}" for m in methods}, refresh=False)

        def on_checkpoint(state: dict) -> None:
            if ctx.should_checkpoint(state["round"]) or state["round"] == cfg.rounds:
                ctx.save_checkpoint(state, state["round"])

        def on_rollback(t: int) -> None:
            ctx.truncate_metrics(t)
            bar.n = t
            bar.write(f"an agent actor died; replaced it and rolled every shard back to round {t}")

        run_rounds(server, pool, start, cfg.rounds, step=step, on_step=on_step, snap=snap,
                   checkpoint_every=cfg.checkpoint_every, on_checkpoint=on_checkpoint, on_rollback=on_rollback)
    rows = ctx.metrics()
    summary = {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}
    return summary | {"rounds": cfg.rounds, "seconds": time.perf_counter() - began,
                      "actor_restarts": getattr(pool, "restarts", 0)}


def final_table(rows: list[dict], methods: tuple[str, ...]) -> str:
    """The last row per method, as an aligned text table (participants: mean over the logged rounds)."""
    if not rows:
        return ""
    last = rows[-1]
    shown = [k for k in METRICS if f"{methods[0]}_{k}" in last]
    lines = [f"{'method':<10}" + "".join(f"{k:>14}" for k in shown)]
    for m in methods:
        cells = []
        for k in shown:
            value = (sum(r[f"{m}_{k}"] for r in rows) / len(rows)) if k == "participants" else last[f"{m}_{k}"]
            cells.append(f"{value:>14.4g}")
        lines.append(f"{LABELS[m]:<10}" + "".join(cells))
    return "\n".join(lines)


def _plots(ctx, rows: list[dict], methods: tuple[str, ...], cfg: Config) -> None:
    """One PNG per metric, and overview.png with four of them side by side (the demo's figure)."""
    if not rows:
        return
    steps = [r["step"] for r in rows]
    shown = [k for k in METRICS if f"{methods[0]}_{k}" in rows[-1]]
    title = f"{cfg.data.num_agents} agents, {cfg.availability.kind} p={cfg.availability.p}"
    for k in shown:
        series = {LABELS[m]: (steps, [r[f"{m}_{k}"] for r in rows]) for m in methods}
        plot_lines(ctx.path(f"{k}.png"), series, xlabel="round", ylabel=k, title=title,
                   logy=k in ("stationarity", "consensus") and all(v > 0 for _, ys in series.values() for v in ys))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("accuracy", "objective", "stationarity", "consensus") if k in shown]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), dpi=100, squeeze=False)
    for ax, k in zip(axes[0], panels):
        for m in methods:
            ys = [r[f"{m}_{k}"] for r in rows]
            ax.plot(steps, ys, label=LABELS[m], linewidth=1.5)
        if k in ("stationarity", "consensus"):
            ax.set_yscale("log")
        ax.set(xlabel="round", title=k)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"SSL-ALM vs FedAvg/FedProx: {cfg.model.name} on {cfg.data.name}, {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(ctx.path("overview.png"))
    plt.close(fig)
