"""`raylab tune CONFIG`: the YAML's `sweep:` block run through `ray.tune.Tuner`.

Each trial is the very function `raylab run` uses (`raylab.driver.execute`), given the base config with the
trial's sampled values set at their dotted keys (`raylab.config.with_values`). Every value a trial can get was
validated before the sweep started (`raylab.config.check_sweep_space`). A trial writes an ordinary run directory
inside its Tune trial directory and reports every logged step to Tune.

How a trial ends, as trials.md / trials.csv's `status` column says:
    completed   it ran to the end
    diverged    a metric turned NaN/inf (`raylab.results.Diverged`): finished, not retried, not a failure
    invalid     its sampled values make an invalid config: reported, not retried (retrying cannot fix it)
    failed      it raised anything else; such a trial is retried (`sweep.max_failures`, Tune's FailureConfig)
                and resumes from its last checkpoint, since the retry finds the same run directory
The best trial is chosen among completed ones. At the end the sweep directory gets `best_config.yaml` and
`trials.md`/`trials.csv` (each trial's values, final metric, status and one-line error).
"""
from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path

import yaml

from raylab.config import ConfigError, RunConfig, SweepConfig, to_dict, with_values
from raylab.results import Diverged, atomic_write, format_value, new_run_dir, write_config

STATUS = "raylab_status"
ERROR = "raylab_error"
FAILED = ("invalid", "failed")  # statuses that make `raylab tune` exit non-zero


def param_space(sweep: SweepConfig) -> dict:
    from ray import tune

    space = {}
    for key, sp in sweep.space.items():
        kind = sp.kind()
        value = getattr(sp, kind)
        space[key] = {
            "grid": lambda v: tune.grid_search(list(v)),
            "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(*v),
        }[kind](value)
    return space


def _trainable(sampled: dict, base: dict, cwd: str) -> None:
    from ray import tune

    from raylab.driver import execute

    if os.path.isdir(cwd):  # Tune starts trials in their own directory; relative paths in configs mean cwd
        os.chdir(cwd)
    try:
        cfg = with_values(base, sampled)
    except ConfigError as err:  # not transient: report it instead of raising, so Tune does not retry it
        tune.report({STATUS: "invalid", ERROR: str(err)})
        return
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    resuming = (run_dir / "config.yaml").exists()  # a retry of a failed trial
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, to_dict(cfg))
    try:
        summary = execute(cfg, run_dir, resume=resuming, report=tune.report)
    except Diverged as err:  # a finished trial with a diverged result, not a failure to retry
        tune.report({STATUS: "diverged", ERROR: str(err)})
        return
    except ConfigError as err:  # found by the experiment at run time (a model path, say): not retried either
        tune.report({STATUS: "invalid", ERROR: str(err)})
        return
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tune.report({**numbers, STATUS: "completed"})


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line_error(err: BaseException) -> str:
    """`Type: message` of the exception a trial raised (unwrapping Ray's wrappers), one line, no ANSI codes."""
    cause = err
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = _ANSI.sub("", str(cause)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else ""
    name = type(cause).__name__
    return f"{name}: {message}" if message and not message.startswith(name) else (message or name)


def trial_rows(grid, sweep: SweepConfig) -> list[dict]:
    """One row per trial: its sampled values, final metric, status and one-line error."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None:
            status, error = "failed", one_line_error(result.error)
        else:
            status, error = metrics.get(STATUS, "completed"), metrics.get(ERROR, "")
        value = metrics.get(sweep.metric) if status == "completed" else None
        rows.append({**{k: (result.config or {}).get(k) for k in sweep.space}, sweep.metric: value,
                     "status": status, "error": " ".join(str(error).split())})
    return rows


def best_trial(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The completed trial with the best finite metric, or None."""
    done = [r for r in rows if r["status"] == "completed" and isinstance(r[metric], (int, float))
            and math.isfinite(r[metric])]
    if not done:
        return None
    return (min if mode == "min" else max)(done, key=lambda r: r[metric])


def sweep(cfg: RunConfig, address: str | None = None) -> tuple[Path, dict, list[dict]]:
    """Runs the sweep; returns (sweep directory, best trial's config or {}, trial rows)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raylab.driver import ray_session

    if cfg.sweep is None:
        raise ConfigError(f"{cfg.name}: the config has no sweep: block")
    sw = cfg.sweep
    base = to_dict(cfg)
    out = new_run_dir(cfg.output_dir, f"{cfg.name}-sweep")
    write_config(out, base)
    scheduler = (ASHAScheduler(grace_period=sw.grace_period) if sw.scheduler == "asha" else FIFOScheduler())
    trainable = functools.partial(_trainable, base=base, cwd=os.getcwd())
    resources = {"cpu": sw.cpus_per_trial, "gpu": sw.gpus_per_trial}
    # a trial's last report (invalid / diverged) need not hold the metric
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    with ray_session(cfg, address):
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=param_space(sw),
            tune_config=tune.TuneConfig(metric=sw.metric, mode=sw.mode, num_samples=sw.num_samples,
                                        scheduler=scheduler, max_concurrent_trials=sw.max_concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(out.resolve()), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=sw.max_failures)),
        )
        grid = tuner.fit()
    trials = trial_rows(grid, sw)
    best = best_trial(trials, sw.metric, sw.mode)
    best_config = to_dict(with_values(base, {k: best[k] for k in sw.space})) if best else {}
    best_config.pop("sweep", None)
    atomic_write(out / "best_config.yaml", yaml.safe_dump(best_config, sort_keys=False).encode())
    _write_trials(out, trials, sw.metric)
    return out, best_config, trials


def _write_trials(out: Path, trials: list[dict], metric: str) -> None:
    import csv
    import io

    keys = list(trials[0]) if trials else [metric, "status", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(trials)
    atomic_write(out / "trials.csv", buf.getvalue().encode())
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(format_value(t[k]).replace("|", "\\|") for k in keys) + " |" for t in trials]
    atomic_write(out / "trials.md", ("\n".join(lines) + "\n").encode())
