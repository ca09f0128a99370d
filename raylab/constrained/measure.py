"""Measurements over runs, each defined once: samples to reach a stationarity eps, fitted rate exponents, and a
run's tail stationarity.

    samples_to_reach(samples, values, eps, hold)   the first sample count from which `hold` consecutive
        checks are all <= eps (inf when no streak of that length exists). `raylab bench alm` applies it to each
        run's checks along one trajectory (hold 3); `alm_rates` to the curve eps(T) over budgets (hold 1: each
        point is already a tail average of its own run).
    fit_exponent(budgets, eps)   k in T ~ eps^-k, the least-squares slope of log T against log(1/eps).
    tail_stationarity(problem, method, samples, seed, hyper)   stationarity averaged over the last quarter of one
        run (the theorems bound it at a random iterate), the point of eps(T) that `alm_rates` plots.
"""
from __future__ import annotations

import math
from typing import Sequence

from raylab.constrained.problem import ConstrainedProblem
from raylab.constrained.solve import log_row, make_optimizer
from raylab.constrained.stationarity import StationarityMeter

TAIL_POINTS = 4  # checks in the last quarter of a run that `tail_stationarity` averages
HOLD = 3  # consecutive checks that must stay <= eps (the bench's default)


def samples_to_reach(samples: Sequence[float], values: Sequence[float], eps: float, hold: int = HOLD) -> float:
    """samples[i] for the first i with values[i], ..., values[i + hold - 1] all <= eps; inf if there is none
    (a NaN value never counts as reached)."""
    if hold < 1 or len(samples) != len(values):
        raise ValueError(f"need hold >= 1 and as many samples as values (got {hold}, {len(samples)}, {len(values)})")
    streak = 0
    for i, value in enumerate(values):
        streak = streak + 1 if value <= eps else 0
        if streak == hold:
            return float(samples[i - hold + 1])
    return math.inf


def fit_exponent(budgets: Sequence[float], eps: Sequence[float]) -> float:
    """k in T ~ eps^-k: the least-squares slope of log T against log(1/eps)."""
    xs, ys = [-math.log(e) for e in eps], [math.log(t) for t in budgets]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def tail_stationarity(problem: ConstrainedProblem, method: str, samples: int, seed: int, hyper: dict) -> float:
    """Mean stationarity at TAIL_POINTS evenly spaced checks of the last quarter of one run of `samples`
    gradient evaluations, with the step sizes that budget prescribes (unless `hyper` sets them)."""
    opt = make_optimizer(problem, method, samples, seed, **hyper)
    meter = StationarityMeter(problem)
    values = []
    for i in reversed(range(TAIL_POINTS)):
        target = opt.T - i * opt.T // (4 * TAIL_POINTS)
        while opt.t < target:
            opt.step()
        values.append(log_row(opt, meter)["stationarity"])
    return sum(values) / len(values)
