"""`solve(problem, method=..., samples=N, seed=...)`: run one method to its sample budget and log its progress.

Each history row (every `log_every` iterations and at the end) holds the three counts every method is compared
on: `samples` (gradient evaluations of f), `oracle_calls` (draws of xi: STORM's two-point call is one xi at two
points, so one call and two evaluations) and `constraint_samples` (draws of zeta); then `objective` F(x_out),
`infeasibility` ||A x_out - b|| and `stationarity` mu ||z - xbar(z)|| in the user's variables at the method's
output point (z for the ALMs, x for penalty and sgda), `kkt` (the KKT residual at the iterate x and the method's
multiplier estimate), `y_norm` and `safeguard_resets`.

An iterate that turns NaN or infinite stops the run with `NonFiniteIterate`, a one-line FloatingPointError that
names the method, the iteration and the samples spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from raylab.constrained.methods import METHODS, Optimizer
from raylab.constrained.problem import ConstrainedProblem
from raylab.constrained.stationarity import StationarityMeter, kkt_residual

Tensor = torch.Tensor
DEFAULT_LOG_POINTS = 50
COUNTS = ("samples", "oracle_calls", "constraint_samples")


class NonFiniteIterate(FloatingPointError):
    """An iterate of a method turned NaN or infinite (one line: method, iteration, samples)."""

    def __init__(self, opt: Optimizer):
        super().__init__(f"{opt.name}: the iterate turned non-finite at iteration {opt.t} ({opt.samples} samples); "
                         f"step sizes {_short(opt.hyper)} are too large for {opt.problem.name}")


def _short(hyper: dict) -> str:
    return "{" + ", ".join(f"{k}={v:.3g}" for k, v in hyper.items() if isinstance(v, float)) + "}"


@dataclass
class Result:
    method: str
    x: Tensor  # the output point in the user's variables (slack dropped)
    z: Tensor
    y: Tensor
    history: list[dict] = field(default_factory=list)
    hyper: dict = field(default_factory=dict)

    @property
    def final(self) -> dict:
        return self.history[-1]


def make_optimizer(problem: ConstrainedProblem, method: str, samples: int, seed: int = 0, **hyper) -> Optimizer:
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {sorted(METHODS)}")
    return METHODS[method](problem, samples, seed=seed, **hyper)


def finite(opt: Optimizer) -> bool:
    return bool(torch.isfinite(opt.x).all() and torch.isfinite(opt.z).all() and torch.isfinite(opt.y).all())


def log_row(opt: Optimizer, meter: StationarityMeter) -> dict:
    """One history row; a non-finite iterate gives NaN measurements (the meter is not run on it)."""
    p, out = opt.problem, opt.output()
    counts = {key: getattr(opt, key) for key in COUNTS}
    if not finite(opt):
        nan = math.nan
        return {**counts, "objective": nan, "infeasibility": nan, "stationarity": nan, "kkt": nan, "y_norm": nan,
                "safeguard_resets": opt.safeguard_resets}
    return {**counts, "objective": p.value(out), "infeasibility": float(torch.linalg.vector_norm(p.residual(out))),
            "stationarity": meter(out), "kkt": kkt_residual(p, opt.x, opt.multiplier()),
            "y_norm": float(torch.linalg.vector_norm(opt.y)), "safeguard_resets": opt.safeguard_resets}


def solve(problem: ConstrainedProblem, method: str = "ssl_alm", samples: int = 10_000, seed: int = 0,
          log_every: int | None = None, stationarity_mu: float | None = None, **hyper) -> Result:
    """Runs `method` for the iterations `samples` buys (see `raylab.constrained.methods`); `hyper` sets
    eta, tau, beta, rho, mu, M_y, alpha, power, x0, oracle ("stochastic"|"exact"), z_update ("pre"|"post").
    Raises NonFiniteIterate when an iterate turns NaN or infinite (checked at every log point)."""
    opt = make_optimizer(problem, method, samples, seed, **hyper)
    meter = StationarityMeter(problem, stationarity_mu)
    every = max(1, log_every or opt.T // DEFAULT_LOG_POINTS)
    history = [log_row(opt, meter)]
    while not opt.done:
        opt.step()
        if opt.t % every == 0 or opt.done:
            if not finite(opt):
                raise NonFiniteIterate(opt)
            history.append(log_row(opt, meter))
    return Result(method, problem.unlift(opt.output()), opt.z, opt.y, history, dict(opt.hyper))
