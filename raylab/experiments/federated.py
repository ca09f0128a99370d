"""Federated consensus SSL-ALM against FedAvg, FedProx and SCAFFOLD, with intermittently connected agents, on Ray.

    raylab run experiments/federated_alm.yaml                        # the demo: client drift, distance to x*
    raylab run experiments/federated_digits.yaml                     # digits, 100 agents, Dirichlet label skew
    raylab run experiments/federated_alm.yaml availability.kind=markov
    raylab run experiments/federated_alm.yaml --resume runs/federated_alm-...   # after an interruption
    raylab tune experiments/federated_sweep.yaml                     # p, eta, tau, beta, M_y through Ray Tune

A step is one round (STEP_NAME): every method advances one round, on the same connections. The agents are split
over `num_actors` Ray actors (one per CPU by default; `single_process: true` runs the same shards in this
process). Every `eval_every` rounds a row goes to metrics.jsonl: per method the mean objective
(1/m) sum_i f_i(x_0), the stationarity ||grad (1/m) sum_i f_i(x_0)||, consensus max_i ||x_i - x_0|| (for the
local-SGD methods: the largest distance of a local model from the server model), ||x_0||, the distance to the
consensus optimum x* (least squares, exact), test accuracy (where there is a test set) and the participants.
A NaN or infinite objective, iterate norm or consensus gap ends the run as diverged (exit 3).
`faults.kill_actor_at_round` kills an agent actor mid-run (ray.kill) to show the run surviving it.
"""
from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field, model_validator

from raylab.config import RunConfig, Section, check_memory
from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec
from raylab.federated.methods import METHODS, AlmHyper, LocalHyper
from raylab.federated.objectives import ModelSpec
from raylab.federated.server import LocalPool, Server, restore, run_rounds, snapshot
from raylab.federated.simulate import check_row, make_methods
from raylab.federated.spec import Problem
from raylab.plots import plot_lines, plot_panels

STEP_NAME = "round"
METRICS = ("distance", "accuracy", "objective", "stationarity", "consensus", "participants")
LOG_SCALE = ("distance", "stationarity", "consensus")
MethodName = Literal[tuple(METHODS)]


class FaultConfig(Section):
    kill_actor_at_round: int | None = Field(None, ge=0, description="ray.kill an agent actor before this round")
    actor: int = Field(0, ge=0)


class Config(RunConfig):
    experiment: Literal["federated"] = "federated"
    rounds: int = Field(300, ge=1)
    eval_every: int = Field(5, ge=1, description="rounds between metric rows")
    methods: list[MethodName] = Field(["ssl_alm", "fedavg", "fedprox"], min_length=1)
    num_actors: int | None = Field(None, ge=1, description="agent actors; null: one per CPU")
    single_process: bool = Field(False, description="run the shards in this process, without actors")
    shard_checkpoints: bool = Field(False, description="each shard writes its agents' state to the run "
                                    "directory (checkpoints/shards; shared by the nodes) instead of the driver")
    batch_size: int | None = Field(16, ge=1, description="samples per agent gradient; null: all (exact)")
    dtype: Literal["float32", "float64"] = "float32"
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    availability: Availability = Availability()
    alm: AlmHyper = AlmHyper()
    baselines: LocalHyper = LocalHyper()
    faults: FaultConfig = FaultConfig()

    @model_validator(mode="after")
    def _fits_together(self):
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: listed twice in {self.methods}")
        if self.faults.kill_actor_at_round is not None and self.single_process:
            raise ValueError("faults.kill_actor_at_round: needs agent actors (single_process: false)")
        check_memory(self.memory_estimate(), "data.num_agents")
        self.problem()                      # model and data fit together (one-line ValueError otherwise)
        return self

    def memory_estimate(self) -> float:
        """A lower estimate of the bytes the shards hold at data.num_agents agents: each method's per-agent
        vectors (at least `features` numbers each) plus the stored rows (synthetic agents store row indices)."""
        features = 64 if self.data.kind == "digits" else self.data.dim
        vectors = sum(method.vectors_per_agent() for method in self.make_methods())
        width = 4 if self.dtype == "float32" else 8
        row = 4 if self.data.kind == "synthetic" else features * width + 4
        return self.data.num_agents * (vectors * features * width + self.data.rows * row + 16)

    def problem(self) -> Problem:
        return Problem(data=self.data, model=self.model, availability=self.availability, seed=self.seed,
                       dtype=self.dtype)

    def make_methods(self) -> list:
        return make_methods(self.methods, self.alm, self.baselines, self.batch_size)


def run(cfg: Config, ctx) -> dict:
    problem = cfg.problem()
    threads = torch.get_num_threads()
    if cfg.single_process:
        torch.set_num_threads(1)      # tiny tensors: one thread, as in an actor, avoids synchronisation costs
        pool = LocalPool(problem, cfg.num_actors or 1)
    else:
        from raylab.federated.actors import RayPool

        pool = RayPool(problem, cfg.num_actors, cpus_per_actor=ctx.actor_cpus(1))
    try:
        server = Server.start(problem, cfg.make_methods(), pool, cfg.rounds)
        summary = _train(cfg, ctx, pool, server)
    finally:
        torch.set_num_threads(threads)
        pool.shutdown()
    if not ctx.in_trial:
        print(final_table(ctx.metrics(), tuple(server.methods)))
    return summary


def _train(cfg: Config, ctx, pool, server: Server) -> dict:
    """Rounds from the start or the last checkpoint to cfg.rounds; returns the summary."""
    methods = tuple(server.methods)
    start, state = ctx.resume()
    shard_dir = ctx.path("checkpoints/shards") if cfg.shard_checkpoints else None
    snap = snapshot(server, pool, 0, shard_dir) if state is None else state
    if state is not None:
        restore(server, pool, state)
    killed = False
    began = time.perf_counter()

    def before_round(t: int) -> None:
        nonlocal killed
        if t == cfg.faults.kill_actor_at_round and not killed:
            killed = True
            pool.kill(cfg.faults.actor % len(pool.sizes))

    with ctx.progress(cfg.rounds, desc=f"federated {cfg.data.kind} {cfg.availability.kind} p={cfg.availability.p}",
                      initial=start) as bar:
        def on_row(done: int, row: dict) -> None:
            bar.update(done - bar.n)
            ctx.log(row, step=done, allow_nonfinite=tuple(row))
            check_row(done, row, methods)
            key = next(k for k in ("distance", "accuracy", "objective") if f"{methods[0]}_{k}" in row)
            bar.set_postfix({server.methods[m].label: f"{row[f'{m}_{key}']:.3g}" for m in methods}, refresh=False)

        def on_rollback(t: int) -> None:
            bar.write(f"an agent actor died; replaced it and rolled every shard back to round {t}")

        run_rounds(server, pool, start, cfg.rounds, eval_every=cfg.eval_every, on_row=on_row, snap=snap,
                   checkpoint_due=ctx.due, before_round=before_round, on_rollback=on_rollback,
                   shard_dir=shard_dir,
                   on_checkpoint=lambda done, s: ctx.checkpoint(done, s, final=done == cfg.rounds))
    rows = ctx.metrics()
    summary = {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}
    return summary | {"rounds": cfg.rounds, "seconds": time.perf_counter() - began,
                      "actor_restarts": getattr(pool, "restarts", 0)}


def _label(method: str) -> str:
    return METHODS[method].label


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
            if k == "participants":
                value = sum(r[f"{m}_{k}"] for r in rows) / len(rows)
            else:
                value = last[f"{m}_{k}"]
            cells.append(f"{value:>14.4g}" if value is not None else f"{'nan':>14}")
        lines.append(f"{_label(m):<10}" + "".join(cells))
    return "\n".join(lines)


def plot(cfg: Config, ctx) -> None:
    """One PNG per metric, and overview.png with up to four of them side by side (the demo's figure)."""
    rows = ctx.metrics()
    if not rows:
        return
    steps = [r["step"] for r in rows]
    shown = [k for k in METRICS if f"{cfg.methods[0]}_{k}" in rows[-1]]
    title = f"{cfg.data.num_agents} agents, {cfg.availability.kind} p={cfg.availability.p}"
    series = {k: {_label(m): (steps, [r.get(f"{m}_{k}") for r in rows]) for m in cfg.methods} for k in shown}
    for k in shown:
        plot_lines(ctx.path(f"{k}.png"), series[k], xlabel="round", ylabel=k, title=title, logy=k in LOG_SCALE)
    panels = [k for k in ("distance", "accuracy", "objective", "stationarity", "consensus") if k in shown][:4]
    plot_panels(ctx.path("overview.png"), {k: series[k] for k in panels}, xlabel="round", logy=LOG_SCALE,
                suptitle=f"{', '.join(_label(m) for m in cfg.methods)}: {cfg.model.name} model, {cfg.data.kind} "
                         f"data, {title}")
