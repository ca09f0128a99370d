"""Experiment `grpo_bandit`: std (GRPO) vs no-std (REINFORCE) updates on the seed's log-linear bandit.

    raylab run experiments/grpo_bandit.yaml                       # exact updates, easy (pi* ~ 0.5) vs hard (~ 0.2)
    raylab run experiments/grpo_bandit.yaml group_size=8          # finite groups of 8 sampled answers
    raylab tune experiments/grpo_bandit.yaml                      # the sweep over lr, group_size and modes

For each difficulty (an initial success probability), mode and seed, one run trains theta from an instance built
by `raylab.grpo.bandit.make_instance` with the same lr for both modes. The runs advance as Ray tasks, `chunk`
iterations at a time; after each chunk every iteration is logged (the mean over seeds of accuracy = mean_i pi*_i,
greedy accuracy, reward variance, ||grad J||, and the largest curvature ratio ||Hess J_i|| / (4 X^2 pi*(1 - pi*)),
which the theory keeps <= 1; the last row of a chunk also holds every question's (pi*(1 - pi*), ||Hess J_i||)).
A step (`STEP_NAME`) is one iteration; `checkpoint_every` counts iterations (chunks end on its multiples).
Figures: accuracy.png (accuracy against iterations, std vs no-std, easy vs hard) and curvature.png
(||Hess J_i|| against pi*(1 - pi*), binned, with the bound 4 X^2 pi*(1 - pi*)).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylab.config import RunConfig, Section
from raylab.grpo.bandit import make_instance, reward_variance, train
from raylab.plots import plot_lines

Mode = Literal["std", "no_std"]
STEP_NAME = "iteration"


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
    done, state = ctx.resume()
    state = state or {"runs": {_key(r): None for r in runs}}
    bandit_cfg = cfg.bandit.model_dump()
    task = ray.remote(num_cpus=ctx.actor_cpus(1))(advance)
    history = _history(ctx.metrics(), cfg)
    with ctx.progress(cfg.iterations, desc="grpo_bandit", initial=done) as bar:
        while done < cfg.iterations:
            # a chunk ends at every checkpoint boundary, so that the state saved there is that iteration's
            steps = min(cfg.chunk, cfg.iterations - done)
            if ctx.checkpoint_every:
                steps = min(steps, ctx.checkpoint_every - done % ctx.checkpoint_every)
            futures = {r: task.remote(bandit_cfg, cfg.difficulties[r[0]], cfg.seed + r[2], r[1], cfg.lr,
                                      cfg.group_size, state["runs"][_key(r)], steps) for r in runs}
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
                if i == steps - 1:  # (pi*(1 - pi*), ||Hess J_i||) of every question, for curvature.png
                    row["curvature_points"] = {d: [p for r in runs if r[0] == d for p in results[r][2]]
                                               for d in cfg.difficulties}
                ctx.log(row | _headline(cfg, history), step=done + i + 1)
            state["runs"] = {_key(r): results[r][0] for r in runs}
            done += steps
            ctx.checkpoint(done, state)
            bar.update(steps)
    ctx.checkpoint(cfg.iterations, state, final=True)
    return _summary(cfg, history, ctx.metrics())


def _key(run: tuple) -> str:
    """A run's name in the checkpoint (whose dict keys must be strings)."""
    return "/".join(map(str, run))


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


def plot(cfg: Config, ctx) -> None:
    """accuracy.png: accuracy against iterations per difficulty and mode; curvature.png: the largest and the mean
    ||Hess J_i|| of the questions in each bin of reward variance pi*(1 - pi*), with the bound 4 X^2 pi*(1 - pi*)."""
    rows = ctx.metrics()
    kind = "exact updates" if cfg.group_size == 0 else f"groups of K = {cfg.group_size}"
    steps = [r["step"] for r in rows]
    series = {f"{d} (pi*0 ~ {cfg.difficulties[d]}), {m}": (steps, [r.get(f"{d}/{m}/accuracy") for r in rows])
              for d in cfg.difficulties for m in cfg.modes}
    plot_lines(ctx.path("accuracy.png"), series, xlabel="iteration", ylabel="accuracy (mean pi*)",
               title=f"log-linear bandit, lr = {cfg.lr:g}, {kind}")
    bins = 20
    curves = {}
    for d in cfg.difficulties:
        points = [p for r in rows for p in r.get("curvature_points", {}).get(d, [])]
        by_bin = {}
        for var, hess in points:
            by_bin.setdefault(min(int(var / 0.25 * bins), bins - 1), []).append(hess)
        centers = [(b + 0.5) * 0.25 / bins for b in sorted(by_bin)]
        curves[f"{d}: max over questions"] = (centers, [max(by_bin[b]) for b in sorted(by_bin)])
        curves[f"{d}: mean"] = (centers, [_mean(by_bin[b]) for b in sorted(by_bin)])
    bound = 4 * cfg.bandit.feature_norm ** 2
    plot_lines(ctx.path("curvature.png"), curves, xlabel="reward variance pi*(1 - pi*)", ylabel="||Hess J_i||",
               title="curvature follows reward variance",
               references={"4 X_max^2 pi*(1 - pi*)": ([0, 0.25], [0, bound * 0.25])})
