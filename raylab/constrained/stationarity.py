"""Stationarity of a point for `min_{x in X, Ax=b} F(x)`, with F the problem's full objective.

    Psi(z) = min_{x in X, Ax=b} F(x) + mu/2 ||x - z||^2,   grad Psi(z) = mu (z - xbar(z))   (Danskin)

`StationarityMeter(problem, mu)(z)` returns mu ||z - xbar(z)||, the measure the SSL-ALM and STORM-ALM theorems
bound. xbar(z) is the solution of a strongly convex problem (mu > weak convexity m), solved here to high accuracy
by an augmented Lagrangian method whose x-subproblems run accelerated projected gradient (FISTA with adaptive
restart). The meter warm-starts from its previous solution, since consecutive log points are close; that state is
in `state_dict()` so a resumed run measures bit for bit what the uninterrupted one did.

`kkt_residual(problem, u, y)` = ||u - proj_X(u - grad F(u) - A^T y)|| + ||Au - b||, zero exactly at a KKT pair.
"""
from __future__ import annotations

import torch

from raylab.constrained.problem import Problem

Tensor = torch.Tensor


def default_mu(problem: Problem) -> float:
    """Twice the weak-convexity modulus (so the prox subproblem is strongly convex), or L/4 for a convex F."""
    return 2.0 * problem.weak_convexity if problem.weak_convexity > 0 else problem.smoothness / 4


class StationarityMeter:
    def __init__(self, problem: Problem, mu: float | None = None, tol: float = 1e-6, max_outer: int = 300,
                 max_inner: int = 3000):
        self.problem, self.mu = problem, float(mu if mu is not None else default_mu(problem))
        if self.mu <= problem.weak_convexity:
            raise ValueError(f"stationarity mu must exceed the weak-convexity modulus {problem.weak_convexity} "
                             f"(got {self.mu})")
        self.tol, self.max_outer, self.max_inner = tol, max_outer, max_inner
        # the subproblem's ALM penalty balances the constraint curvature against F's, keeping both loops short
        self.rho = (problem.smoothness + self.mu) / max(problem.A_norm ** 2, 1e-12)
        self.lipschitz = problem.smoothness + self.mu + self.rho * problem.A_norm ** 2
        self.x: Tensor | None = None
        self.y = torch.zeros(problem.A.shape[0], dtype=problem.dtype)

    def __call__(self, z: Tensor) -> float:
        return self.mu * float(torch.linalg.vector_norm(z - self.prox_point(z)))

    def prox_point(self, z: Tensor) -> Tensor:
        """xbar(z), to tolerance `tol` in both the projected gradient and ||Ax - b||."""
        p, A, b = self.problem, self.problem.A, self.problem.b
        x = p.project(z.clone()) if self.x is None else self.x
        y, inner_tol = self.y, self.tol
        for _ in range(self.max_outer):
            x, inner_done = self._minimize_lagrangian(x, y, z, inner_tol)
            r = A @ x - b
            y = y + self.rho * r
            infeasibility = float(torch.linalg.vector_norm(r))
            if inner_done and inner_tol <= self.tol and infeasibility <= self.tol:
                break
            # inexact ALM: the subproblems need only be as accurate as the current infeasibility
            inner_tol = max(self.tol, 0.1 * infeasibility * self.rho)
        self.x, self.y = x, y
        return x

    def _minimize_lagrangian(self, x: Tensor, y: Tensor, z: Tensor, tol: float) -> tuple[Tensor, bool]:
        """FISTA on F(x) + <y, Ax-b> + rho/2 ||Ax-b||^2 + mu/2 ||x-z||^2 over X, restarted when it stalls."""
        p, A, b, step = self.problem, self.problem.A, self.problem.b, 1.0 / self.lipschitz

        def grad(v: Tensor) -> Tensor:
            return p.full_grad(v) + A.T @ (y + self.rho * (A @ v - b)) + self.mu * (v - z)

        v, t = x, 1.0
        for _ in range(self.max_inner):
            x_new = p.project(v - step * grad(v))
            if float(torch.linalg.vector_norm(x_new - v)) * self.lipschitz <= tol:
                return x_new, True
            if float(torch.dot(v - x_new, x_new - x)) > 0:  # momentum points uphill: restart
                v, t = x, 1.0
                continue
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            v = x_new + ((t - 1) / t_new) * (x_new - x)
            x, t = x_new, t_new
        return x, False

    def state_dict(self) -> dict:
        return {"x": None if self.x is None else self.x.clone(), "y": self.y.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.x = None if state["x"] is None else state["x"].clone()
        self.y = state["y"].clone()


def kkt_residual(problem: Problem, u: Tensor, y: Tensor) -> float:
    stat = u - problem.project(u - problem.full_grad(u) - problem.A.T @ y)
    return float(torch.linalg.vector_norm(stat) + torch.linalg.vector_norm(problem.A @ u - problem.b))
