"""A minimal experiment for the foundation's tests: noisy SGD on f(x) = (x - target)^2 / 2.

Named in YAML by its dotted path (`experiment: toy_experiment`, with tests/ on the path). Knobs for the
reliability tests: at step `fail_at` the run raises a RuntimeError once (`fail: once`, a marker file records that
it already failed), every time (`always`), a ConfigError (`config`), or logs a NaN loss (`nan`); `sleep_s` slows each step down (to
interrupt a run); `lr` > 2 makes the iterate grow geometrically until the loss overflows (a divergence).
Each start of `run` appends a line to `attempts` in the run directory, so a test can count retries.
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


def run(cfg: Config, ctx) -> dict:
    with open(ctx.path("attempts"), "a") as f:
        f.write("1\n")
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.zeros(())
    start, state = ctx.resume()
    if state is not None:
        x = state["x"]
        gen.set_state(state["rng"])
    marker = ctx.path("failed-once")
    for step in range(start, cfg.steps):
        if cfg.fail_at == step and (cfg.fail != "once" or not marker.exists()):
            marker.write_text("1")
            if cfg.fail == "config":
                raise ConfigError(f"fail_at: planned config error at step {step}")
            if cfg.fail == "nan":
                ctx.log({"loss": float("nan"), "x": float(x)}, step=step)
            raise RuntimeError(f"planned failure at step {step}")
        grad = (x - cfg.target) + cfg.noise * torch.randn((), generator=gen)
        x = x - cfg.lr * grad
        ctx.log({"loss": float(0.5 * (x - cfg.target) ** 2), "x": float(x)}, step=step)
        ctx.checkpoint(step + 1, {"x": x, "rng": gen.get_state()})
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
    ctx.checkpoint(cfg.steps, {"x": x, "rng": gen.get_state()}, final=True)
    return {"loss": float(0.5 * (x - cfg.target) ** 2), "x": float(x)}


def plot(cfg: Config, ctx) -> None:
    rows = ctx.metrics()
    plot_lines(ctx.path("loss.png"), {"sgd": ([r["step"] for r in rows], [r["loss"] for r in rows])},
               xlabel="step", ylabel="loss", logy=True)
