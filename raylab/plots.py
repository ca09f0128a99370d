"""Every figure raylab draws: PNG line plots with matplotlib's Agg backend, one helper per shape of figure.

    plot_lines(path, {"ssl_alm": (steps, values)}, xlabel="round", ylabel="objective", logy=True)
    plot_panels(path, {"accuracy": {...}, "objective": {...}}, xlabel="round", logy=("objective",))

Non-finite points (NaN, inf, None) are dropped before drawing, so a run that diverged still gets its figures
from what it measured before; a log axis also drops points <= 0 and falls back to linear when none are left.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

Series = Mapping[str, tuple[Iterable[float], Iterable[float]]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finite_points(xs: Iterable, ys: Iterable, positive: bool = False) -> tuple[list[float], list[float]]:
    """The (x, y) pairs whose both values are finite numbers (and y > 0 when `positive`)."""
    keep = []
    for x, y in zip(xs, ys):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y):
            if not positive or y > 0:
                keep.append((float(x), float(y)))
    return [x for x, _ in keep], [y for _, y in keep]


def _draw(ax, series: Series, references: Series | None, logx: bool, logy: bool) -> None:
    lines = {label: finite_points(xs, ys, positive=logy) for label, (xs, ys) in series.items()}
    refs = {label: finite_points(xs, ys, positive=logy) for label, (xs, ys) in (references or {}).items()}
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, label=label, linewidth=1.5)
    for label, (xs, ys) in refs.items():
        ax.plot(xs, ys, "--", color="gray", label=label, linewidth=1)
    drawn = [y for _, ys in list(lines.values()) + list(refs.values()) for y in ys]
    if logx:
        ax.set_xscale("log")
    if logy and drawn:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def plot_lines(path: Path, series: Series, *, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
               logy: bool = False, references: Series | None = None) -> Path:
    """One PNG with a line per series (label -> (xs, ys)); `references` are drawn dashed (theory lines)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    _draw(ax, series, references, logx, logy)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if series or references:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_panels(path: Path, panels: Mapping[str, Series], *, xlabel: str, logy: Iterable[str] = (),
                logx: bool = False, suptitle: str = "", panel_width: float = 4.0) -> Path:
    """Panels side by side, one per title (title -> series); the legend goes on the first panel."""
    plt = _pyplot()
    logy = set(logy)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(panel_width * max(len(panels), 1), 3.4), dpi=100,
                             squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        _draw(ax, series, None, logx, title in logy)
        ax.set(xlabel=xlabel, title=title)
    if panels:
        axes[0][0].legend(fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
