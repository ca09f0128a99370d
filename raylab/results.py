"""Run directories: what every run leaves behind, in files a person can read.

    runs/<name>-<time>/
        config.yaml        the resolved config (after overrides)
        metrics.jsonl      one JSON object per logged step
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
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunContext:
    """Logging, checkpoints, progress and plots for one run, rooted at `run_dir`."""

    def __init__(self, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 report: Callable[[dict], None] | None = None, checkpoint_every: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.show_progress = progress
        self.checkpoint_every = checkpoint_every
        self._report = report
        self.in_trial = report is not None
        self._metrics_path = self.run_dir / "metrics.jsonl"
        self._ckpt_dir = self.run_dir / "checkpoints"

    def actor_cpus(self, cpus: float) -> float:
        """CPUs an actor or task started by the experiment should ask Ray for: inside a Tune trial the trial
        has already reserved its CPUs, and asking again could deadlock concurrent trials."""
        return 0 if self.in_trial else cpus

    # --- metrics ---------------------------------------------------------------------------------------------
    def log(self, metrics: dict, step: int) -> None:
        """Appends one row to metrics.jsonl (and reports it to Ray Tune when this run is a trial)."""
        row = {"step": int(step), **_jsonable(metrics)}
        with open(self._metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._report is not None:
            self._report({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def metrics(self) -> list[dict]:
        return read_metrics(self.run_dir)

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drops rows logged after the checkpoint, so the file matches an uninterrupted run."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= after_step]
        atomic_write(self._metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    # --- checkpoints -----------------------------------------------------------------------------------------
    def should_checkpoint(self, log_index: int) -> bool:
        return self.checkpoint_every > 0 and log_index > 0 and log_index % self.checkpoint_every == 0

    def save_checkpoint(self, state: dict, step: int) -> Path:
        import io

        import torch

        self._ckpt_dir.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save({"step": int(step), "state": state}, buf)
        path = self._ckpt_dir / f"ckpt-{int(step):09d}.pt"
        atomic_write(path, buf.getvalue())
        atomic_write(self._ckpt_dir / "latest", path.name.encode())
        for old in sorted(self._ckpt_dir.glob("ckpt-*.pt"))[:-CHECKPOINTS_KEPT]:
            old.unlink()
        return path

    def load_checkpoint(self) -> tuple[int, dict] | None:
        """(step, state) of the newest checkpoint, or None when there is none (a fresh run)."""
        latest = self._ckpt_dir / "latest"
        if not latest.exists():
            return None
        import torch

        blob = torch.load(self._ckpt_dir / latest.read_text().strip(), weights_only=False)
        return blob["step"], blob["state"]

    # --- output ----------------------------------------------------------------------------------------------
    def progress(self, total: int, desc: str = "", initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, initial=initial, disable=not self.show_progress, mininterval=0.5,
                    dynamic_ncols=True, leave=False)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.run_dir / "summary.json", json.dumps(_jsonable(summary), indent=2).encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())


def read_config(run_dir: str | Path) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())


def plot_lines(path: Path, series: dict[str, tuple[Iterable[float], Iterable[float]]], *, xlabel: str,
               ylabel: str, title: str = "", logx: bool = False, logy: bool = False,
               references: dict[str, tuple[Iterable[float], Iterable[float]]] | None = None) -> Path:
    """One PNG with a line per series (label -> (xs, ys)); `references` are drawn dashed (theory lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, linewidth=1.5)
    for label, (xs, ys) in (references or {}).items():
        ax.plot(list(xs), list(ys), "--", color="gray", label=label, linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if series or references:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def report(run_dirs: list[str | Path]) -> str:
    """A Markdown table of runs (experiment, name, final metrics) followed by each run's figures."""
    rows, figures, keys = [], [], []
    for d in map(Path, run_dirs):
        if not (d / "config.yaml").exists():
            raise FileNotFoundError(f"{d}: not a run directory (no config.yaml)")
        cfg = read_config(d)
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        keys += [k for k in flat if k not in keys]
        rows.append((d, cfg, flat))
        figures += [(d, p) for p in sorted(d.glob("*.png"))]
    lines = ["| run | experiment | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for d, cfg, flat in rows:
        cells = [_fmt(flat.get(k, "")) for k in keys]
        status = "" if flat else " (unfinished)"
        lines.append(f"| {d.name}{status} | {cfg.get('experiment')} | " + " | ".join(cells) + " |")
    for d, png in figures:
        lines += ["", f"**{d.name} / {png.stem}**", "", f"![{png.stem}]({png})"]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
