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
from raylab.results import RunContext, new_run_dir, read_config, write_config


@contextlib.contextmanager
def ray_session(cfg: RunConfig, address: str | None = None):
    """Uses a running Ray (inside a Tune trial), joins `address` (or $RAY_ADDRESS, as set in a Ray job), or
    starts a local instance for this run."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, include_dashboard=cfg.ray.dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


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
    """Runs the experiment `cfg` names inside `run_dir`; returns and stores its final metrics."""
    module = experiment_module(cfg.experiment)
    ctx = RunContext(run_dir, resume=resume, progress=cfg.progress and report is None, report=report,
                     checkpoint_every=cfg.checkpoint_every)
    summary = module.run(cfg, ctx)
    ctx.write_summary(summary)
    return summary


def run(cfg: RunConfig, address: str | None = None, resume: str | Path | None = None) -> tuple[Path, dict]:
    """`raylab run`: Ray session + run directory + experiment."""
    run_dir, resuming = prepare_run_dir(cfg, resume)
    with ray_session(cfg, address):
        summary = execute(cfg, run_dir, resume=resuming)
    return run_dir, summary
