"""Ray wiring of `raylab.constrained`: the one module of the part that imports Ray (the core never does).

    workers = method_workers(problem_spec, {"ssl_alm": hyper, ...}, samples, seed, log_points, mu, num_cpus)
    rows = ray.get([w.advance.remote(k) for w in workers.values()])        # the `constrained` experiment
    task = tail_stationarity_task(num_cpus)                                 # the `alm_rates` experiment
    ref = task.remote(problem_spec, "ssl_alm", 16000, seed, hyper)

`MethodWorker` is a plain class (tests run it in-process); `method_workers` wraps it as one actor per method.
A problem crosses process boundaries as its plain spec dict (`raylab.constrained.make_problem`).
"""
from __future__ import annotations

import math

import ray

from raylab.constrained.measure import tail_stationarity
from raylab.constrained.problems import make_problem
from raylab.constrained.solve import log_row, make_optimizer
from raylab.constrained.stationarity import StationarityMeter


class MethodWorker:
    """One method's optimizer and stationarity meter, advanced log point by log point."""

    def __init__(self, problem: dict, method: str, samples: int, seed: int, hyper: dict, log_points: int,
                 stationarity_mu: float | None = None):
        self.problem = make_problem(problem)
        self.opt = make_optimizer(self.problem, method, samples, seed, **hyper)
        self.meter = StationarityMeter(self.problem, stationarity_mu)
        self.log_points = log_points

    def advance(self, log_index: int) -> dict:
        """Steps until log point `log_index` (of `log_points`, evenly spaced in iterations); returns its row,
        whose measurements are NaN once the iterate is non-finite (the experiment then stops as diverged)."""
        target = math.ceil(log_index * self.opt.T / self.log_points)
        while self.opt.t < target:
            self.opt.step()
        return log_row(self.opt, self.meter)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "meter": self.meter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.meter.load_state_dict(state["meter"])


def method_workers(problem: dict, hypers: dict[str, dict], samples: int, seed: int, log_points: int,
                   stationarity_mu: float | None, num_cpus: float) -> dict:
    """One MethodWorker actor per method (keys of `hypers`, each with its hyper-parameters)."""
    actor = ray.remote(MethodWorker).options(num_cpus=num_cpus)
    return {m: actor.remote(problem, m, samples, seed, hyper, log_points, stationarity_mu)
            for m, hyper in hypers.items()}


def _tail_stationarity(problem: dict, method: str, samples: int, seed: int, hyper: dict) -> float:
    return tail_stationarity(make_problem(problem), method, samples, seed, hyper)


def tail_stationarity_task(num_cpus: float):
    """`tail_stationarity` as a Ray task taking the problem's spec dict."""
    return ray.remote(_tail_stationarity).options(num_cpus=num_cpus)
