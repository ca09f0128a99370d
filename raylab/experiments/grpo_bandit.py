"""Experiment `grpo_bandit`: std (GRPO) vs no-std (REINFORCE) updates on the seed's log-linear bandit.

    raylab run experiments/grpo_bandit.yaml                       # exact updates, easy (pi* ~ 0.5) vs hard (~ 0.2)
    raylab run experiments/grpo_bandit.yaml group_size=8          # finite groups of 8 sampled answers
    raylab tune experiments/grpo_bandit.yaml                      # the sweep over lr, group_size and modes

For each difficulty (an initial success probability), mode and seed, one run trains theta from an instance built
by `raylab.grpo.bandit.make_instance` with the same lr for both modes. The runs advance as Ray tasks, `chunk`
iterations at a time; after each chunk every iteration is logged (the mean over seeds of accuracy = mean_i pi*_i,
greedy accuracy, reward variance, ||grad J||, and the largest curvature ratio ||Hess J_i|| / (4 X^2 pi*(1 - pi*)),
which the theory keeps <= 1) and, every `checkpoint_every` iterations, the state is checkpointed.
Figures: accuracy.png (accuracy against iterations, std vs no-std, easy vs hard) and curvature.png
(||Hess J_i|| against pi*(1 - pi*) at every chunk boundary, with the bound 4 X^2 pi*(1 - pi*)).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylab.config import RunConfig, Section
from raylab.grpo.bandit import make_instance, reward_variance, train
from raylab.results import plot_lines

Mode = Literal["std", "no_std"]


class BanditConfig(Section):
    num_questions: int = Field(16, ge=1)
    num_answers: int = Field(8, ge=2)
    dim: int = Field(128, ge=1, description="feature dimension; orthogonal blocks get dim // num_questions each")
    feature_norm: float = Field(1.0, gt=0, description="X_max, the norm of every feature vector")
    init_norm: float = Field(3.0, gt=0, description="||theta0|| in each question's block")
    init_spread: float = Field(0.05, ge=0, description="initial pi*_i = difficulty's p +- init_spread")
    orthogonal: bool = Field(True, description="each question in its own coordinates (Assumption 2)")


class Config(RunConfig):
    experiment: Literal["grpo_bandit"] = "grpo_bandit"
    bandit: BanditConfig = BanditConfig()
    difficulties: dict[str, float] = Field({"easy": 0.5, "hard": 0.2}, min_length=1,
                                           description="name -> initial success probability")
    modes: list[Mode] = Field(["std", "no_std"], min_length=1)
    lr: float = Field(1.0, gt=0, description="the same step size for both modes; 1/X_max^2 is the seed's")
    group_size: int = Field(0, ge=0, description="answers sampled per question; 0: exact (infinite) groups")
    iterations: int = Field(200, ge=1)
    seeds: int = Field(4, ge=1, description="instances per difficulty (and sampling seeds)")
    chunk: int = Field(50, ge=1, description="iterations per Ray task between logs")

    @field_validator("group_size")
    @classmethod
    def _group(cls, k: int) -> int:
        if k == 1:
            raise ValueError("a group needs at least 2 answers (or 0 for exact updates)")
        return k

    @field_validator("difficulties")
    @classmethod
    def _probabilities(cls, d: dict[str, float]) -> dict[str, float]:
        for name, p in d.items():
            if not 0 < p < 1:
                raise ValueError(f"{name}: initial success probability must lie in (0, 1) (got {p})")
        return d

    @model_validator(mode="after")
    def _instances_exist(self) -> "Config":
        """Builds every instance once (milliseconds), so an impossible setting is a config error before any run."""
        for p in self.difficulties.values():
            for s in range(self.seeds):
                make_instance(init_success=p, seed=self.seed + s, **self.bandit.model_dump())
        return self


def advance(bandit_cfg: dict, init_success: float, seed: int, mode: str, lr: float, group_size: int, state: dict,
            steps: int) -> tuple[dict, list[dict], list[tuple[float, float]]]:
    """Runs `steps` iterations of one (difficulty, mode, seed) run from `state`; returns the new state, a metrics
    row per iteration, and (pi*(1 - pi*), ||Hess J_i||) for every question at the end."""
    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    bandit, theta0 = make_instance(init_success=init_success, seed=seed, **bandit_cfg)
    theta = theta0 if state is None else state["theta"]
    generator = torch.Generator().manual_seed(seed)
    if state is not None:
        generator.set_state(state["rng"])
    theta, rows = train(bandit, theta, steps, lr, mode, group_size, generator)
    points = list(zip(reward_variance(bandit, theta).tolist(), bandit.curvature(theta).tolist()))
    return {"theta": theta, "rng": generator.get_state()}, rows, points


def run(cfg: Config, ctx) -> dict:
    import ray

    runs = [(d, m, s) for d in cfg.difficulties for m in cfg.modes for s in range(cfg.seeds)]
    start, state = 0, {"runs": {r: None for r in runs}, "points": []}
    if ctx.resume and (ckpt := ctx.load_checkpoint()):
        start, state = ckpt
        ctx.truncate_metrics(start)
    bandit_cfg = cfg.bandit.model_dump()
    task = ray.remote(num_cpus=ctx.actor_cpus(1))(advance)
    history = _history(ctx.metrics() if start else [], cfg)
    with ctx.progress(cfg.iterations, desc="grpo_bandit", initial=start) as bar:
        while start < cfg.iterations:
            steps = min(cfg.chunk, cfg.iterations - start)
            futures = {r: task.remote(bandit_cfg, cfg.difficulties[r[0]], cfg.seed + r[2], r[1], cfg.lr,
                                      cfg.group_size, state["runs"][r], steps) for r in runs}
            results = dict(zip(futures, ray.get(list(futures.values()))))
            for i in range(steps):
                row = {}
                for d in cfg.difficulties:
                    for m in cfg.modes:
                        seeds = [results[(d, m, s)][1][i] for s in range(cfg.seeds)]
                        for key in seeds[0]:
                            reduce = max if key == "curvature_ratio" else _mean
                            row[f"{d}/{m}/{key}"] = reduce([x[key] for x in seeds])
                        history[(d, m)].append(row[f"{d}/{m}/accuracy"])
                ctx.log(row | _headline(cfg, history), step=start + i + 1)
            state["runs"] = {r: results[r][0] for r in runs}
            state["points"] += [(r[0], p) for r in runs for p in results[r][2]]
            crossed = ctx.checkpoint_every and (start + steps) // ctx.checkpoint_every > start // ctx.checkpoint_every
            start += steps
            if crossed:
                ctx.save_checkpoint(state, start)
            bar.update(steps)
    ctx.save_checkpoint(state, cfg.iterations)
    _plots(ctx, cfg, history, state["points"])
    return _summary(cfg, history, ctx.metrics())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _history(rows: list[dict], cfg: Config) -> dict:
    return {(d, m): [r[f"{d}/{m}/accuracy"] for r in rows] for d in cfg.difficulties for m in cfg.modes}


def _headline(cfg: Config, history: dict) -> dict:
    """mean_accuracy (over difficulties and modes; the sweep's metric) and each difficulty's gain of std over
    no-std, at the latest iteration: logged every iteration, so that Ray Tune sees them in every report."""
    row = {"mean_accuracy": _mean([acc[-1] for acc in history.values()])}
    if {"std", "no_std"} <= set(cfg.modes):
        row |= {f"{d}_gain": history[(d, "std")][-1] - history[(d, "no_std")][-1] for d in cfg.difficulties}
    return row


def _summary(cfg: Config, history: dict, rows: list[dict]) -> dict:
    summary = {f"{d}_{m}_accuracy": acc[-1] for (d, m), acc in history.items()} | _headline(cfg, history)
    summary["max_curvature_ratio"] = max(v for r in rows for k, v in r.items() if k.endswith("curvature_ratio"))
    return summary


def _plots(ctx, cfg: Config, history: dict, points: list) -> None:
    kind = "exact updates" if cfg.group_size == 0 else f"groups of K = {cfg.group_size}"
    series = {f"{d} (pi*0 ~ {cfg.difficulties[d]}), {m}": (range(1, len(acc) + 1), acc)
              for (d, m), acc in history.items()}
    plot_lines(ctx.path("accuracy.png"), series, xlabel="iteration", ylabel="accuracy (mean pi*)",
               title=f"log-linear bandit, lr = {cfg.lr:g}, {kind}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for d in cfg.difficulties:
        var = [p[0] for name, p in points if name == d]
        ax.scatter(var, [p[1] for name, p in points if name == d], s=6, alpha=0.5, label=d)
    bound = 4 * cfg.bandit.feature_norm ** 2
    ax.plot([0, 0.25], [0, bound * 0.25], "--", color="gray", label="4 X_max^2 pi*(1 - pi*)")
    ax.axhline(cfg.bandit.feature_norm ** 2, color="gray", linewidth=0.8, label="X_max^2")
    ax.set(xlabel="reward variance pi*(1 - pi*)", ylabel="||Hess J_i||", title="curvature follows reward variance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.path("curvature.png"))
    plt.close(fig)
