"""The driver: one code path from a validated config to a finished run directory.

`raylab run` and every Ray Tune trial call `execute` below. It connects to Ray (a local instance started on
demand, or a cluster address), imports the experiment's module, and calls its `run(cfg, ctx)`.

Resuming (`raylab run CONFIG --resume RUN_DIR`) continues with the run's stored config. A config that differs
from it (overrides, an edited YAML) is refused unless `--override` is given; then config.yaml keeps the original
values and lists each change under `resume_overrides`, with the step from which it applied.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Callable

from raylab.config import ConfigError, RunConfig, experiment_module, set_dotted, to_dict
from raylab.results import Diverged, RunContext, new_run_dir, read_config, read_metrics, write_config

CONNECT_TIMEOUT_S = 10  # an unreachable --address fails after this long (one TCP connect)
GCS_TIMEOUT_S = 10  # ... and an address that accepts connections but is no Ray GCS after this long
NOT_COMPARED = ("name", "output_dir", "progress", "sweep", "resume_overrides")  # keys a resume may change freely


class ClusterUnreachable(ConnectionError):
    """`--address` names no reachable Ray cluster (the CLI prints one line and exits 2)."""


def _check_reachable(address: str) -> None:
    """A TCP connect to host:port of a `host:port` or `ray://host:port` address, so that a wrong address
    fails in seconds instead of Ray's minute of GCS retries."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachable(f"--address {address}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ClusterUnreachable(f"--address {address}: no Ray cluster reachable there ({reason})") from None


def _started_cluster() -> str:
    """`--address auto`: the cluster `ray start` started on this machine (Ray's own `auto` would also join
    any other user's Ray it finds running here, so raylab reads only the address `ray start` recorded)."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    found = path.read_text().strip() if path.is_file() else ""
    if not found:
        raise ClusterUnreachable(f"--address auto: no Ray cluster was started on this machine with `ray start` "
                                 f"(no {path}); start one or give host:port")
    return found


_GCS_PROBE = """
import sys
import ray._raylet
ray._raylet.GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=float(sys.argv[2]))
"""


def _check_gcs(address: str) -> None:
    """One request to the GCS at host:port from a child process given GCS_TIMEOUT_S (its C++ client logs
    retries to stderr and, against a port that accepts connections but is not a GCS, retries for minutes)."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PROBE, address, str(GCS_TIMEOUT_S)], timeout=GCS_TIMEOUT_S,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired:
        raise ClusterUnreachable(f"--address {address}: something listens there but no Ray GCS answered within "
                                 f"{GCS_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "no reply"
        raise ClusterUnreachable(f"--address {address}: not a usable Ray cluster ({reason})")


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread while Ray runs, so the `finally` that shuts
    down what this process started (raylet, GCS, dashboard, runtime-env agents) runs when the driver is killed."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            dashboard: bool = False):
    """Uses a running Ray (inside a Tune trial), joins `address` (or $RAY_ADDRESS, as set in a Ray job), or
    starts a local instance with its dashboard bound to 127.0.0.1; shuts down only what it started or joined,
    also when the driver is interrupted or sent SIGTERM. Benchmarks use this too."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "auto":
        address = _started_cluster()
    if address:
        _check_reachable(address)
        if not address.startswith("ray://"):  # ray:// is the Ray Client server, not the GCS
            _check_gcs(address)
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # "local": always a new instance, never a cluster that `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                     dashboard_host="127.0.0.1", log_to_driver=True)
    except ConnectionError as err:
        ray.shutdown()
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterUnreachable(f"--address {address}: {first}") from None
    try:
        with _terminate_as_interrupt():  # after ray.init, which installs its own SIGTERM handler
            yield
    finally:
        ray.shutdown()


def ray_session(cfg: RunConfig, address: str | None = None):
    """`connect` with the config's `ray:` block."""
    return connect(address, num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, dashboard=cfg.ray.dashboard)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def effective_config(stored: dict) -> dict:
    """A stored config.yaml with its `resume_overrides` applied in order: the values the run uses now."""
    data = {k: v for k, v in stored.items() if k != "resume_overrides"}
    for record in stored.get("resume_overrides") or []:
        for key, value in (record.get("values") or {}).items():
            set_dotted(data, key, value)
    return data


def config_changes(stored: dict, cfg: RunConfig) -> dict:
    """Dotted key -> (value the run used, value `cfg` asks for), for the keys that differ."""
    old, new = _flat(effective_config(stored)), _flat(to_dict(cfg))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k.split(".")[0] not in NOT_COMPARED}


def prepare_run_dir(cfg: RunConfig, resume: str | Path | None, override: bool = False) -> tuple[Path, bool]:
    """A new run directory with the config written, or the checked run directory being resumed."""
    if resume is None:
        run_dir = new_run_dir(cfg.output_dir, cfg.name or cfg.experiment)
        write_config(run_dir, to_dict(cfg))
        return run_dir, False
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    stored = read_config(run_dir)  # a corrupt file is a one-line error naming it
    read_metrics(run_dir)
    if stored.get("experiment") != cfg.experiment:
        raise ConfigError(f"--resume {run_dir}: it holds a run of experiment {stored.get('experiment')!r}, "
                          f"not {cfg.experiment!r}")
    changes = config_changes(stored, cfg)
    if changes and not override:
        shown = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in list(changes.items())[:4])
        more = f" and {len(changes) - 4} more" if len(changes) > 4 else ""
        raise ConfigError(f"--resume {run_dir}: the config changes {shown}{more}; add --override to apply the "
                          "change from the resumed step (recorded in config.yaml), or drop it")
    return run_dir, True


def record_overrides(run_dir: Path, cfg: RunConfig, from_step: int) -> None:
    """Appends the resumed run's config changes to config.yaml's `resume_overrides` (original values kept)."""
    stored = read_config(run_dir)
    changes = config_changes(stored, cfg)
    if changes:
        records = list(stored.get("resume_overrides") or [])
        records.append({"from_step": int(from_step), "values": {k: new for k, (_, new) in changes.items()}})
        write_config(run_dir, {**stored, "resume_overrides": records})


def execute(cfg: RunConfig, run_dir: Path, resume: bool = False,
            report: Callable[[dict], None] | None = None) -> dict:
    """Runs the experiment `cfg` names inside `run_dir`; returns and stores its final metrics.

    An experiment module may define `STEP_NAME` (its unit of progress, "step" by default: "round",
    "iteration") and `plot(cfg, ctx)`, which draws its figures from `ctx.metrics()`; `plot` is called after
    `run` returns and after a divergence, so a diverged run still gets figures of what it measured. On
    divergence summary.json holds `status: diverged` with the step and metric, and `Diverged` propagates.
    When resuming, a config that differs from the stored one is recorded from the step `ctx.resume()` returns."""
    module = experiment_module(cfg.experiment)
    on_resume = (lambda completed: record_overrides(run_dir, cfg, completed)) if resume else None
    ctx = RunContext(run_dir, resume=resume, progress=cfg.progress and report is None, report=report,
                     checkpoint_every=cfg.checkpoint_every, step_name=getattr(module, "STEP_NAME", "step"),
                     on_resume=on_resume)
    plot = getattr(module, "plot", None)
    try:
        summary = module.run(cfg, ctx)
    except Diverged as err:
        ctx.write_summary(err.summary())
        if plot is not None:
            plot(cfg, ctx)
        raise
    finally:
        ctx.close()
    if resume and not ctx.resumed:  # the experiment never asked: it ran from its first step
        record_overrides(run_dir, cfg, 0)
    if plot is not None:
        plot(cfg, ctx)
    ctx.write_summary({"status": "completed", **summary})
    return summary


def run(cfg: RunConfig, address: str | None = None, resume: str | Path | None = None,
        override: bool = False) -> tuple[Path, dict]:
    """`raylab run`: run directory + Ray session + experiment. An exception leaving here carries `run_dir`."""
    run_dir = None
    if resume is not None:
        run_dir, _ = prepare_run_dir(cfg, resume, override)  # checked before Ray starts
    try:
        with ray_session(cfg, address):
            if run_dir is None:  # created once Ray is up, so a bad --address leaves nothing behind
                run_dir, _ = prepare_run_dir(cfg, None)
            summary = execute(cfg, run_dir, resume=resume is not None)
    except (Diverged, KeyboardInterrupt) as err:
        err.run_dir = run_dir  # the CLI's one line names the run directory
        raise
    return run_dir, summary
