"""The driver: one code path from a validated config to a finished run directory.

`raylab run` and every Ray Tune trial call `execute` below. It connects to Ray (a local instance started on
demand, or a cluster address), imports the experiment's module, and calls its `run(cfg, ctx)`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from raylab.config import RunConfig, experiment_module, to_dict
from raylab.results import Diverged, RunContext, new_run_dir, read_config, write_config


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            dashboard: bool = False):
    """Uses a running Ray (inside a Tune trial), joins `address` (or $RAY_ADDRESS, as set in a Ray job), or
    starts a local instance; shuts down only what it started or joined. Benchmarks use this too."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


def ray_session(cfg: RunConfig, address: str | None = None):
    """`connect` with the config's `ray:` block."""
    return connect(address, num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, dashboard=cfg.ray.dashboard)


def prepare_run_dir(cfg: RunConfig, resume: str | Path | None) -> tuple[Path, bool]:
    """A new run directory, or the one being resumed (whose stored config is replaced by the new one)."""
    if resume is None:
        run_dir = new_run_dir(cfg.output_dir, cfg.name or cfg.experiment)
    else:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        if read_config(run_dir).get("experiment") != cfg.experiment:
            raise ValueError(f"--resume {run_dir}: it holds a run of another experiment")
    write_config(run_dir, to_dict(cfg))
    return run_dir, resume is not None


def execute(cfg: RunConfig, run_dir: Path, resume: bool = False,
            report: Callable[[dict], None] | None = None) -> dict:
    """Runs the experiment `cfg` names inside `run_dir`; returns and stores its final metrics.

    An experiment module may define `STEP_NAME` (its unit of progress, "step" by default: "round",
    "iteration") and `plot(cfg, ctx)`, which draws its figures from `ctx.metrics()`; `plot` is called after
    `run` returns and after a divergence, so a diverged run still gets figures of what it measured. On
    divergence summary.json holds `status: diverged` with the step and metric, and `Diverged` propagates."""
    module = experiment_module(cfg.experiment)
    ctx = RunContext(run_dir, resume=resume, progress=cfg.progress and report is None, report=report,
                     checkpoint_every=cfg.checkpoint_every, step_name=getattr(module, "STEP_NAME", "step"))
    plot = getattr(module, "plot", None)
    try:
        summary = module.run(cfg, ctx)
    except Diverged as err:
        ctx.write_summary(err.summary())
        if plot is not None:
            plot(cfg, ctx)
        raise
    if plot is not None:
        plot(cfg, ctx)
    ctx.write_summary({"status": "completed", **summary})
    return summary


def run(cfg: RunConfig, address: str | None = None, resume: str | Path | None = None) -> tuple[Path, dict]:
    """`raylab run`: Ray session + run directory + experiment."""
    run_dir, resuming = prepare_run_dir(cfg, resume)
    with ray_session(cfg, address):
        try:
            summary = execute(cfg, run_dir, resume=resuming)
        except Diverged as err:
            err.run_dir = run_dir  # the CLI's one line names the run directory
            raise
    return run_dir, summary
