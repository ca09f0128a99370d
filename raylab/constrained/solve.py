"""`solve(problem, method=..., samples=N, seed=...)`: run one method to its sample budget and log its progress.

Each history row (every `log_every` iterations and at the end) holds `samples` (gradient evaluations so far),
`constraint_samples`, `objective` F(x_out), `infeasibility` ||A x_out - b|| and `stationarity` mu ||z - xbar(z)||
at the method's output point (z for the ALMs, x for penalty and sgda), `kkt` (the KKT residual at the iterate x
and the method's multiplier estimate), `y_norm` and `safeguard_resets`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raylab.constrained.methods import METHODS, Optimizer
from raylab.constrained.problem import Problem
from raylab.constrained.stationarity import StationarityMeter, kkt_residual

Tensor = torch.Tensor
DEFAULT_LOG_POINTS = 50


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


def make_optimizer(problem: Problem, method: str, samples: int, seed: int = 0, **hyper) -> Optimizer:
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {sorted(METHODS)}")
    return METHODS[method](problem, samples, seed=seed, **hyper)


def log_row(opt: Optimizer, meter: StationarityMeter) -> dict:
    p, out = opt.problem, opt.output()
    return {"samples": opt.samples, "constraint_samples": opt.constraint_samples, "objective": p.value(out),
            "infeasibility": float(torch.linalg.vector_norm(p.residual(out))), "stationarity": meter(out),
            "kkt": kkt_residual(p, opt.x, opt.multiplier()), "y_norm": float(torch.linalg.vector_norm(opt.y)),
            "safeguard_resets": opt.safeguard_resets}


def solve(problem: Problem, method: str = "ssl_alm", samples: int = 10_000, seed: int = 0,
          log_every: int | None = None, stationarity_mu: float | None = None, **hyper) -> Result:
    """Runs `method` for the iterations `samples` buys (see `raylab.constrained.methods`); `hyper` sets
    eta, tau, beta, rho, mu, M_y, alpha, power, x0, oracle ("stochastic"|"exact"), z_update ("pre"|"post")."""
    opt = make_optimizer(problem, method, samples, seed, **hyper)
    meter = StationarityMeter(problem, stationarity_mu)
    every = max(1, log_every or opt.T // DEFAULT_LOG_POINTS)
    history = [log_row(opt, meter)]
    while not opt.done:
        opt.step()
        if opt.t % every == 0 or opt.done:
            history.append(log_row(opt, meter))
    return Result(method, problem.unlift(opt.output()), opt.z, opt.y, history, dict(opt.hyper))
