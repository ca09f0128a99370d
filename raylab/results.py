"""Run directories: what every run leaves behind, in files a person can read.

    runs/<name>-<time>/
        config.yaml        the resolved config (after overrides)
        metrics.jsonl      one JSON object per logged step
        tensorboard/       the same rows as TensorBoard scalars (`tensorboard --logdir runs`)
        summary.json       the final metrics
        checkpoints/       ckpt-<step>.pt, the last two kept; `latest` names the newest
        *.png              plots

`RunContext` is what an experiment's `run(cfg, ctx)` receives. It does not import Ray: when a run is a Ray Tune
trial the driver passes a `report` callback that forwards each logged step to Tune.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

CHECKPOINTS_KEPT = 2


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file then rename, so a crash never leaves a half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    """Plain JSON data; NaN and inf become null (the row still says which metric diverged: see `Diverged`)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Diverged(RuntimeError):
    """A metric turned NaN or infinite: the run stops, `summary.json` says `status: diverged`, the CLI exits 3."""

    def __init__(self, step: int, metric: str, value: Any, step_name: str = "step"):
        self.step, self.metric, self.value, self.step_name = int(step), metric, value, step_name
        super().__init__(f"diverged at {step_name} {self.step} ({metric} is {value})")

    def summary(self) -> dict:
        return {"status": "diverged", "diverged_at": self.step, "diverged_metric": self.metric,
                "diverged_value": str(self.value)}


def first_nonfinite(metrics: dict, allow: Iterable[str] = ()) -> tuple[str, Any] | None:
    """The first numeric entry of `metrics` (nested dicts as `a.b`) that is NaN or infinite, or None."""
    allow = set(allow)
    for key, value in metrics.items():
        if key in allow:
            continue
        if isinstance(value, dict):
            found = first_nonfinite({f"{key}.{k}": v for k, v in value.items()}, allow)
            if found:
                return found
            continue
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return key, value
    return None


def _pack(value: Any, where: str = "state") -> Any:
    """Checkpoint state as what `torch.load(weights_only=True)` reads back: tensors, numbers, strings, lists,
    tuples and dicts. numpy arrays and scalars are carried as tensors / Python numbers and restored on load."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{where}: a numpy array of Python objects cannot be checkpointed")
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _pack(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        packed = [_pack(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return packed if isinstance(value, list) else tuple(packed)
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype)):
        return value
    raise TypeError(f"{where}: a {type(value).__name__} cannot be checkpointed (tensors, numpy arrays, numbers, "
                    "strings, lists, tuples and dicts can)")


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__numpy__"}:
            return value["__numpy__"].numpy()
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unpack(v) for v in value)
    return value


class RunContext:
    """Logging, checkpoints, progress and plots for one run, rooted at `run_dir`.

    The one resume rule, used by every experiment (a "step" is the experiment's own unit, its `STEP_NAME`:
    a round, an iteration, a training step; `checkpoint_every` counts those):

        completed, state = ctx.resume()             # (0, None) for a fresh run
        for step in range(completed, total):
            ...                                      # do step number `step` (0-based)
            ctx.log(metrics, step=step + 1)         # rows carry the number of completed steps
            ctx.checkpoint(step + 1, state)         # saved when checkpoint_every divides it
        ctx.checkpoint(total, state, final=True)

    A checkpoint records how many rows metrics.jsonl had, and `resume()` cuts the file back to that, so a
    resumed run's metrics equal an uninterrupted run's whatever step labels the experiment logs.
    """

    def __init__(self, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 report: Callable[[dict], None] | None = None, checkpoint_every: int = 0,
                 step_name: str = "step", on_resume: Callable[[int], None] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resuming = resume
        self.show_progress = progress
        self.checkpoint_every = checkpoint_every
        self.step_name = step_name
        self._report = report
        self._on_resume = on_resume  # called with the completed steps resume() returns (the driver records
        self.resumed = False         # config overrides from there)
        self.in_trial = report is not None
        self._metrics_path = self.run_dir / "metrics.jsonl"
        self._ckpt_dir = self.run_dir / "checkpoints"
        self._rows = None  # rows in metrics.jsonl, counted on first use
        self._tb = None  # the TensorBoard writer, opened on first log

    def actor_cpus(self, cpus: float) -> float:
        """CPUs an actor or task started by the experiment should ask Ray for: inside a Tune trial the trial
        has already reserved its CPUs, and asking again could deadlock concurrent trials."""
        return 0 if self.in_trial else cpus

    # --- metrics ---------------------------------------------------------------------------------------------
    def log(self, metrics: dict, step: int, allow_nonfinite: Iterable[str] = ()) -> None:
        """Appends one row to metrics.jsonl (and reports it to Ray Tune when this run is a trial).

        A NaN or infinite value (other than keys in `allow_nonfinite`, such as "samples to reach eps" when
        it was not reached) is written as null and then raises `Diverged`, which ends the run."""
        row = {"step": int(step), **_jsonable(metrics)}
        rows = self._row_count()
        with open(self._metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._rows = rows + 1
        self._tensorboard(row)
        if self._report is not None:
            self._report({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        bad = first_nonfinite(metrics, allow_nonfinite)
        if bad:
            raise Diverged(step, bad[0], bad[1], self.step_name)

    def metrics(self) -> list[dict]:
        return read_metrics(self.run_dir)

    def _tensorboard(self, row: dict) -> None:
        """Writes a metrics row's finite numbers (nested keys as `a/b`) as TensorBoard scalars at its step."""
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), flush_secs=10)
        for key, value in _scalars(row):
            if key != "step":
                self._tb.add_scalar(key, value, global_step=row["step"])

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer (the driver calls this when the run ends, however it ends)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _row_count(self) -> int:
        if self._rows is None:
            self._rows = len(self.metrics())
        return self._rows

    def _cut_metrics(self, rows: int) -> None:
        """Keeps the first `rows` rows of metrics.jsonl, and rewrites the TensorBoard events from them."""
        import shutil

        kept = self.metrics()[:rows]
        atomic_write(self._metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._rows = len(kept)
        self.close()
        shutil.rmtree(self.run_dir / "tensorboard", ignore_errors=True)
        for row in kept:
            self._tensorboard(row)

    # --- checkpoints -----------------------------------------------------------------------------------------
    def due(self, completed_steps: int) -> bool:
        """Whether `checkpoint_every` asks for a checkpoint after this many completed steps."""
        return self.checkpoint_every > 0 and completed_steps > 0 and completed_steps % self.checkpoint_every == 0

    def checkpoint(self, completed_steps: int, state: dict, final: bool = False) -> bool:
        """Saves `state` after `completed_steps` steps when it is due (or `final`); returns whether it saved."""
        if not (final or self.due(completed_steps)):
            return False
        self._save(completed_steps, state)
        return True

    def resume(self) -> tuple[int, dict | None]:
        """(completed steps, state) of the newest readable checkpoint, with metrics.jsonl cut back to what it
        held then; (0, None) for a fresh run or a run that has no checkpoint yet (its rows are cleared)."""
        if not self.resuming:
            return 0, None
        found = self._load()
        completed, rows, state = (0, 0, None) if found is None else found
        self._cut_metrics(rows)
        self.resumed = True
        if self._on_resume is not None:
            self._on_resume(completed)
        return completed, state

    def _save(self, completed_steps: int, state: dict) -> Path:
        import io

        import torch

        self._ckpt_dir.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save({"completed": int(completed_steps), "rows": self._row_count(), "state": _pack(state)}, buf)
        path = self._ckpt_dir / f"ckpt-{int(completed_steps):09d}.pt"
        atomic_write(path, buf.getvalue())
        atomic_write(self._ckpt_dir / "latest", path.name.encode())
        for old in sorted(self._ckpt_dir.glob("ckpt-*.pt"))[:-CHECKPOINTS_KEPT]:
            old.unlink()
        return path

    def _load(self) -> tuple[int, int, dict] | None:
        """The newest checkpoint that loads: `latest` first (it must name a file in checkpoints/), then the
        older kept ones, each failure a one-line warning. None when there is none; ValueError when every
        checkpoint present is unreadable."""
        import sys

        import torch

        if not self._ckpt_dir.is_dir():
            return None
        candidates = sorted(self._ckpt_dir.glob("ckpt-*.pt"), reverse=True)
        latest = self._ckpt_dir / "latest"
        if latest.exists():
            name = latest.read_text().strip()
            if Path(name).name != name or not (self._ckpt_dir / name).is_file():
                print(f"raylab: warning: {latest}: does not name a checkpoint in {self._ckpt_dir}; ignored",
                      file=sys.stderr)
            else:
                candidates = [self._ckpt_dir / name] + [c for c in candidates if c.name != name]
        for path in candidates:
            try:
                blob = torch.load(path, weights_only=True)
                return int(blob["completed"]), int(blob["rows"]), _unpack(blob["state"])
            except Exception as err:  # a truncated or foreign file: try the previous one
                print(f"raylab: warning: {path}: unreadable checkpoint ({type(err).__name__}); trying an older one",
                      file=sys.stderr)
        if candidates:
            raise ValueError(f"{self._ckpt_dir}: no readable checkpoint (tried {len(candidates)})")
        return None

    # --- output ----------------------------------------------------------------------------------------------
    def progress(self, total: int, desc: str = "", initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, initial=initial, disable=not self.show_progress, mininterval=0.5,
                    dynamic_ncols=True, leave=False)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.run_dir / "summary.json", json.dumps(_jsonable(summary), indent=2).encode())


def _scalars(row: dict, prefix: str = ""):
    """(key, value) for every finite number of a metrics row, nested dicts as `a/b`."""
    for key, value in row.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield f"{prefix}{key}", value


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, blank lines skipped; a line that is not a JSON object is a one-line
    ValueError naming the file and line (`path:3: not valid JSON (...)`). Used for metrics and for datasets."""
    rows = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg}); the file is corrupt") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: not a JSON object; the file is corrupt")
        rows.append(row)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl ([] before the first row is written)."""
    path = Path(run_dir) / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())


def read_config(run_dir: str | Path) -> dict:
    """A run directory's config.yaml; unreadable YAML or a non-mapping is a one-line ValueError naming it."""
    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where}; the file is corrupt") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of keys to values; the file is corrupt")
    return data


def read_summary(run_dir: str | Path) -> dict:
    """A run directory's summary.json ({} while the run is unfinished); a corrupt one is a one-line ValueError."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}); the file is corrupt") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object; the file is corrupt")
    return data


def report(run_dirs: list[str | Path]) -> str:
    """A Markdown table of runs (experiment, name, final metrics) followed by each run's figures."""
    rows, figures, keys = [], [], []
    for d in map(Path, run_dirs):
        if not (d / "config.yaml").exists():
            raise FileNotFoundError(f"{d}: not a run directory (no config.yaml)")
        cfg = read_config(d)
        summary = read_summary(d)
        flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        keys += [k for k in flat if k not in keys]
        rows.append((d, cfg, flat))
        figures += [(d, p) for p in sorted(d.glob("*.png"))]
    lines = ["| run | experiment | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for d, cfg, flat in rows:
        cells = [format_value(flat.get(k, "")) for k in keys]
        status = "" if flat else " (unfinished)"
        lines.append(f"| {d.name}{status} | {cfg.get('experiment')} | " + " | ".join(cells) + " |")
    for d, png in figures:
        lines += ["", f"**{d.name} / {png.stem}**", "", f"![{png.stem}]({png})"]
    return "\n".join(lines) + "\n"


def format_value(value: Any) -> str:
    """A table cell: floats with 4 significant digits, None as empty, anything else as str()."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
