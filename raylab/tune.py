"""`raylab tune CONFIG`: the YAML's `sweep:` block run through `ray.tune.Tuner`.

Each trial is the very function `raylab run` uses (`raylab.driver.execute`), given the base config with the
trial's sampled values set at their dotted keys. A trial writes an ordinary run directory inside its Tune trial
directory and reports every logged step to Tune. A failed trial is retried (FailureConfig) and resumes from its
last checkpoint, since the retry finds the same run directory. At the end the sweep directory gets
`best_config.yaml` and `trials.md`/`trials.csv` (one row per trial: its values and its final metric).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from raylab.config import RunConfig, SweepConfig, to_dict, validate
from raylab.results import atomic_write, new_run_dir, write_config


def set_dotted(data: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def trial_config(base: dict, sampled: dict) -> RunConfig:
    data = yaml.safe_load(yaml.safe_dump(base))  # a deep copy of plain data
    data.pop("sweep", None)
    for key, value in sampled.items():
        set_dotted(data, key, value)
    data["progress"] = False
    return validate(data, source="trial")


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
    cfg = trial_config(base, sampled)
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    resuming = (run_dir / "config.yaml").exists()  # a retry of a failed trial
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, to_dict(cfg))
    summary = execute(cfg, run_dir, resume=resuming, report=tune.report)
    tune.report({k: v for k, v in summary.items() if isinstance(v, (int, float))} | {"done": True})


def validate_space(cfg: RunConfig) -> None:
    """Every key in the space must be a real config key: checked before any trial starts."""
    base = to_dict(cfg)
    for key, sp in cfg.sweep.space.items():
        values = getattr(sp, sp.kind())
        trial_config(base, {key: values[0]})


def sweep(cfg: RunConfig, address: str | None = None) -> tuple[Path, dict, list[dict]]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raylab.driver import ray_session

    if cfg.sweep is None:
        raise ValueError(f"{cfg.name}: the config has no sweep: block")
    validate_space(cfg)
    sw = cfg.sweep
    out = new_run_dir(cfg.output_dir, f"{cfg.name}-sweep")
    write_config(out, to_dict(cfg))
    scheduler = (ASHAScheduler(grace_period=sw.grace_period) if sw.scheduler == "asha" else FIFOScheduler())
    trainable = functools.partial(_trainable, base=to_dict(cfg), cwd=os.getcwd())
    resources = {"cpu": sw.cpus_per_trial, "gpu": sw.gpus_per_trial}
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
    trials = [{**{k: (r.config or {}).get(k) for k in sw.space}, sw.metric: (r.metrics or {}).get(sw.metric),
               "error": str(r.error).splitlines()[0] if r.error else ""} for r in grid]
    best = grid.get_best_result(metric=sw.metric, mode=sw.mode, scope="last") if any(
        t[sw.metric] is not None for t in trials) else None
    best_config = to_dict(trial_config(to_dict(cfg), best.config)) if best else {}
    best_config.pop("sweep", None)
    atomic_write(out / "best_config.yaml", yaml.safe_dump(best_config, sort_keys=False).encode())
    _write_trials(out, trials, sw.metric)
    return out, best_config, trials


def _write_trials(out: Path, trials: list[dict], metric: str) -> None:
    import csv
    import io

    keys = list(trials[0]) if trials else [metric]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(trials)
    atomic_write(out / "trials.csv", buf.getvalue().encode())
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(t[k]) for k in keys) + " |" for t in trials]
    atomic_write(out / "trials.md", ("\n".join(lines) + "\n").encode())


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
