"""Stationarity of a point for `min_{x in X, Ax=b} F(x)`, with F the problem's full objective.

    Psi(z) = min_{x in X, Ax=b} F(x) + mu/2 ||x - z||^2,   grad Psi(z) = mu (z - xbar(z))   (Danskin)

`StationarityMeter(problem, mu)(z)` returns mu ||z - xbar(z)||, the measure the SSL-ALM and STORM-ALM theorems
bound, in the user's variables x: for a polyhedron the slack w of u = (x, w) is a variable of the subproblem
(w = h - Hx at its solution) but carries no proximal term, so the value does not depend on the slack of z.
xbar(z) is the solution of a strongly convex problem (mu > weak convexity m), solved here to high accuracy by an
augmented Lagrangian method whose x-subproblems run accelerated projected gradient (FISTA with adaptive restart).
Its penalty is rho = (L + mu) / sigma_min(A)^2: the outer loop contracts at a rate set by rho sigma_min^2 / (L + mu)
and so needs a few dozen iterations whatever the conditioning of A (a slack system [H I] is badly conditioned;
rho from ||A|| left it crawling). A meter that stops at `max_outer` unconverged warns in one line and says so in
`converged`. It warm-starts from its previous solution, since consecutive log points are close; that state is in
`state_dict()` so a resumed run measures bit for bit what the uninterrupted one did.

`kkt_residual(problem, u, y)` = ||u - proj_X(u - grad F(u) - A^T y)|| + ||Au - b||, zero exactly at a KKT pair.
"""
from __future__ import annotations

import warnings

import torch

from raylab.constrained.problem import ConstrainedProblem

Tensor = torch.Tensor


def default_mu(problem: ConstrainedProblem) -> float:
    """Twice the weak-convexity modulus (so the prox subproblem is strongly convex), or L/4 for a convex F."""
    return 2.0 * problem.weak_convexity if problem.weak_convexity > 0 else problem.smoothness / 4


class StationarityMeter:
    def __init__(self, problem: ConstrainedProblem, mu: float | None = None, tol: float = 1e-6,
                 max_outer: int = 300, max_inner: int = 3000):
        self.problem, self.mu = problem, float(mu if mu is not None else default_mu(problem))
        if self.mu <= problem.weak_convexity:
            raise ValueError(f"stationarity mu must exceed the weak-convexity modulus {problem.weak_convexity} "
                             f"(got {self.mu})")
        self.tol, self.max_outer, self.max_inner = tol, max_outer, max_inner
        # the outer loop contracts like 1 / (1 + rho sigma_min^2 / (L + mu)): this rho makes that about 1/2
        self.rho = (problem.smoothness + self.mu) / max(problem.A_sigma_min ** 2, 1e-12)
        self.lipschitz = problem.smoothness + self.mu + self.rho * problem.A_norm ** 2
        self.weight = torch.zeros(problem.size, dtype=problem.dtype)
        self.weight[: problem.dim] = 1.0  # the proximal term acts on x only, never on the slack
        self.x: Tensor | None = None
        self.y = torch.zeros(problem.A.shape[0], dtype=problem.dtype)
        self.converged = True

    def __call__(self, z: Tensor) -> float:
        d = self.problem.dim
        return self.mu * float(torch.linalg.vector_norm(z[:d] - self.prox_point(z)[:d]))

    def prox_point(self, z: Tensor) -> Tensor:
        """xbar(z), to tolerance `tol` in both the projected gradient and ||Ax - b||."""
        p, A, b = self.problem, self.problem.A, self.problem.b
        x = p.project(z.clone()) if self.x is None else self.x
        y, inner_tol, self.converged = self.y, self.tol, False
        for _ in range(self.max_outer):
            x, inner_done = self._minimize_lagrangian(x, y, z, inner_tol)
            r = A @ x - b
            y = y + self.rho * r
            infeasibility = float(torch.linalg.vector_norm(r))
            if not infeasibility < float("inf"):  # a runaway z: more iterations cannot help
                break
            if inner_done and inner_tol <= self.tol and infeasibility <= self.tol:
                self.converged = True
                break
            # inexact ALM: the subproblems need only be as accurate as the current infeasibility
            inner_tol = max(self.tol, 0.1 * infeasibility * self.rho)
        if not self.converged:
            warnings.warn(f"StationarityMeter on {p.name}: stopped unconverged after {self.max_outer} outer iterations "
                          f"(||Ax - b|| = {infeasibility:.2e}, tol {self.tol:g}); the stationarity is inexact",
                          RuntimeWarning, stacklevel=2)
        self.x, self.y = x, y
        return x

    def _minimize_lagrangian(self, x: Tensor, y: Tensor, z: Tensor, tol: float) -> tuple[Tensor, bool]:
        """FISTA on F(x) + <y, Ax-b> + rho/2 ||Ax-b||^2 + mu/2 ||x-z||^2 over X, restarted when it stalls."""
        p, A, b, step = self.problem, self.problem.A, self.problem.b, 1.0 / self.lipschitz

        def grad(v: Tensor) -> Tensor:
            return p.full_grad(v) + A.T @ (y + self.rho * (A @ v - b)) + self.mu * self.weight * (v - z)

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


def kkt_residual(problem: ConstrainedProblem, u: Tensor, y: Tensor) -> float:
    stat = u - problem.project(u - problem.full_grad(u) - problem.A.T @ y)
    return float(torch.linalg.vector_norm(stat) + torch.linalg.vector_norm(problem.A @ u - problem.b))
