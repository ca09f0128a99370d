"""A minimal experiment for the foundation's tests: noisy SGD on f(x) = (x - target)^2 / 2.

Named in YAML by its dotted path (`experiment: toy_experiment`, with tests/ on the path). Knobs for the
reliability tests: at step `fail_at` the run raises a RuntimeError once (`fail: once`, a marker file records
that it already failed), every time (`always`), a ConfigError (`config`), or logs a NaN loss (`nan`);
`sleep_s` slows each step down (to interrupt a run); `lr` > 2 makes the iterate grow geometrically until the
loss overflows (a divergence).
Each start of `run` appends a line to `attempts` in the run directory, so a test can count retries.
With `actors: N` the gradient noise comes from N Ray actors (spread over the cluster's nodes, each with its own
seeded generator, averaged), and the summary says on how many nodes the actors and the run itself were.
"""
from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field

from raylab.config import ConfigError, RunConfig
from raylab.plots import plot_lines


class Config(RunConfig):
    experiment: Literal["toy_experiment"] = "toy_experiment"
    steps: int = Field(20, ge=1)
    lr: float = Field(0.1, gt=0, le=10)
    target: float = 3.0
    noise: float = Field(0.1, ge=0)
    fail_at: int | None = None
    fail: Literal["once", "always", "config", "nan"] = "once"
    sleep_s: float = Field(0.0, ge=0)
    actors: int = Field(0, ge=0, le=8)


class NoiseActor:
    """Draws seeded standard normals; says which node it runs on."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self) -> float:
        return float(torch.randn((), generator=self.gen))

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def _noise_actors(cfg: Config, ctx) -> list:
    import ray

    remote = ray.remote(num_cpus=ctx.actor_cpus(1), scheduling_strategy="SPREAD")(NoiseActor)
    return [remote.remote(cfg.seed * 100 + k) for k in range(cfg.actors)]


def run(cfg: Config, ctx) -> dict:
    with open(ctx.path("attempts"), "a") as f:
        f.write("1\n")
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.zeros(())
    start, state = ctx.resume()
    if state is not None:
        x = state["x"]
        gen.set_state(state["rng"])
    actors = _noise_actors(cfg, ctx) if cfg.actors else []
    if actors and start:  # the actors' generators restart: replay the draws of the completed steps
        import ray

        ray.get([a.draw.remote() for a in actors for _ in range(start)])
    marker = ctx.path("failed-once")
    for step in range(start, cfg.steps):
        if cfg.fail_at == step and (cfg.fail != "once" or not marker.exists()):
            marker.write_text("1")
            if cfg.fail == "config":
                raise ConfigError(f"fail_at: planned config error at step {step}")
            if cfg.fail == "nan":
                ctx.log({"loss": float("nan"), "x": float(x)}, step=step)
            raise RuntimeError(f"planned failure at step {step}")
        if actors:
            import ray

            noise = sum(ray.get([a.draw.remote() for a in actors])) / len(actors)
        else:
            noise = torch.randn((), generator=gen)
        grad = (x - cfg.target) + cfg.noise * noise
        x = x - cfg.lr * grad
        ctx.log({"loss": float(0.5 * (x - cfg.target) ** 2), "x": float(x)}, step=step)
        ctx.checkpoint(step + 1, {"x": x, "rng": gen.get_state()})
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
    ctx.checkpoint(cfg.steps, {"x": x, "rng": gen.get_state()}, final=True)
    summary = {"loss": float(0.5 * (x - cfg.target) ** 2), "x": float(x)}
    if actors:
        import ray

        summary["actor_nodes"] = sorted(set(ray.get([a.node.remote() for a in actors])))
        summary["run_node"] = ray.get_runtime_context().get_node_id()
    return summary


def plot(cfg: Config, ctx) -> None:
    rows = ctx.metrics()
    plot_lines(ctx.path("loss.png"), {"sgd": ([r["step"] for r in rows], [r["loss"] for r in rows])},
               xlabel="step", ylabel="loss", logy=True)
