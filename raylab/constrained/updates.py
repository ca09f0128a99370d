"""The three update rules of the smoothed linearized ALM family, written once and shared.

The methods of `raylab.constrained.methods` (`SSLALM`, `StormALM`, `ProxALM`, and the `Penalty` and `SGDA`
baselines) and the federated agents and server (`raylab.federated.agents`, `raylab.federated.server`, where A is
the consensus operator and never formed) all call these; none of them writes a second ALM step.

With K(x, y, z) = f(x) + <y, Ax - b> + rho/2 ||Ax - b||^2 + mu/2 ||x - z||^2, one SSL-ALM iteration is

    y <- y + eta * v                 v: an unbiased estimate of Ax - b           (dual_step)
    if ||y|| >= M_y: y <- 0          the dual safeguard                          (dual_step)
    x <- proj_X(x - tau * G)         G = g + A^T y + rho A^T v' + mu (x - z)     (primal_step)
    z <- z + beta (x_t - z)          x_t: the iterate before the primal step     (prox_center_step)

where g estimates grad f(x) and v' is a second, independent residual estimate (so that rho A^T v' is unbiased
for rho A^T (Ax - b)). Tensors may carry leading batch dimensions; norms are over everything.
"""
from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor


def dual_step(y: Tensor, v: Tensor, eta: float, M_y: float | None) -> tuple[Tensor, bool]:
    """y + eta * v, pulled back to 0 when its norm reaches M_y. Returns (new y, whether the safeguard fired)."""
    y_new = y + eta * v
    if M_y is not None and torch.linalg.vector_norm(y_new) >= M_y:
        return torch.zeros_like(y_new), True
    return y_new, False


def primal_step(x: Tensor, z: Tensor, grad_f: Tensor, At_y: Tensor, At_v: Tensor, *, tau: float, rho: float,
                mu: float, project: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """proj_X(x - tau * (grad_f + A^T y + rho * A^T v + mu * (x - z)))."""
    step = x - tau * (grad_f + At_y + rho * At_v + mu * (x - z))
    return project(step) if project is not None else step


def prox_center_step(z: Tensor, x: Tensor, beta: float) -> Tensor:
    """z + beta * (x - z); pass the pre-step iterate x_t (the final algorithm) or x_{t+1} (the variant)."""
    return z + beta * (x - z)


def storm_direction(d_prev: Tensor, g_new: Tensor, g_old: Tensor, alpha: float) -> Tensor:
    """STORM: d_{t+1} = g(x_{t+1}; xi) + (1 - alpha) (d_t - g(x_t; xi)), the same xi at both points."""
    return g_new + (1.0 - alpha) * (d_prev - g_old)
