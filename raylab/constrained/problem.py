"""The problem `min_{x in X} E[f(x; xi)]  s.t.  E[A(zeta) x - b(zeta)] = 0`, and the oracles the solvers call.

A user gives f as a torch callable (autograd supplies gradients), a sampler for xi, the constraint either as a
deterministic pair (A, b) or as a stochastic residual r(x, zeta), affine in x with E r(x, zeta) = Ax - b, plus a
sampler for zeta, and X as a set from `raylab.constrained.sets`. Samplers take a `torch.Generator`, so a solver's
randomness is one generator whose state checkpoints with it.

A polyhedron X = {Hx <= h, lower <= x <= upper} is rewritten with a slack w >= 0 as Hx + w = h, each row of H
scaled to unit norm first: internally the variable is u = (x, w), the constraint rows [A 0; H I] u = [b; h], and
X becomes the bounds on x times R^p_+, which is cheap to project onto. Every oracle below works on u; `lift` and
`unlift` convert.

`A_norm` (||A||_2) and `A_sigma_min` (the smallest singular value of the constraint rows, the slack rows
included) are what default step sizes and the stationarity meter's penalty are computed from.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from raylab.constrained.sets import Free, Polyhedron, Set

Tensor = torch.Tensor
MEAN_ESTIMATE_DRAWS = 1000  # draws that estimate E[A(zeta)], E[b(zeta)] when a stochastic residual comes without them


class ConstrainedProblem:
    """See the module docstring. `weak_convexity` (m: F + m/2 ||x||^2 is convex) and `smoothness` (L, a bound on
    the Lipschitz constant of grad F) set default step sizes and the accuracy of the stationarity solver.
    `gradient(x, xi)` and `full_gradient(x)` are optional closed forms: autograd costs far more than the
    arithmetic of a small problem, so the shipped problems give them (tests check they match autograd). With a
    stochastic residual, A and b may give its mean exactly; otherwise it is estimated from many draws."""

    def __init__(self, objective: Callable[[Tensor, Any], Tensor], dim: int, *,
                 sample_xi: Callable[[torch.Generator], Any] | None = None, X: Set = Free(),
                 A: Tensor | None = None, b: Tensor | None = None,
                 residual: Callable[[Tensor, Any], Tensor] | None = None,
                 sample_zeta: Callable[[torch.Generator], Any] | None = None,
                 full_objective: Callable[[Tensor], Tensor] | None = None,
                 gradient: Callable[[Tensor, Any], Tensor] | None = None,
                 full_gradient: Callable[[Tensor], Tensor] | None = None, x0: Tensor | None = None,
                 weak_convexity: float = 0.0, smoothness: float = 1.0, dtype=torch.float64, name: str = "problem"):
        if dim < 1:
            raise ValueError(f"dim must be at least 1 (got {dim})")
        if residual is None and (A is None or b is None):
            raise ValueError("give the constraint as A and b, or as residual with sample_zeta (A, b then the mean)")
        if residual is not None and sample_zeta is None:
            raise ValueError("a stochastic residual needs sample_zeta")
        if smoothness <= 0 or weak_convexity < 0:
            raise ValueError(f"smoothness must be > 0 and weak_convexity >= 0 (got {smoothness}, {weak_convexity})")
        if full_objective is None and sample_xi is None:
            full_objective = lambda x: objective(x, None)  # noqa: E731  (a deterministic f is its own mean)
            full_gradient = full_gradient or (gradient and (lambda x: gradient(x, None)))
        self._gradient, self._full_gradient = gradient, full_gradient
        self.name, self.dim, self.dtype = name, dim, dtype
        self.objective, self.sample_xi, self.full_objective = objective, sample_xi, full_objective
        self.weak_convexity, self.smoothness = float(weak_convexity), float(smoothness)
        self._residual, self.sample_zeta = residual, sample_zeta
        if residual is not None and A is None:
            A, b = self._estimate_mean_constraint()
        A = torch.as_tensor(A, dtype=dtype)
        b = torch.as_tensor(b, dtype=dtype)
        if A.ndim != 2 or A.shape[1] != dim or b.shape != (A.shape[0],):
            raise ValueError(f"A must be (k, {dim}) and b (k,), got {tuple(A.shape)} and {tuple(b.shape)}")
        self.slack = X.H.shape[0] if isinstance(X, Polyhedron) else 0
        if self.slack:
            H, h = X.H.to(dtype), X.h.to(dtype)
            self.bounds = X.bounds()
            if H.shape[1] != dim:
                raise ValueError(f"Polyhedron: H must have {dim} columns (got {H.shape[1]})")
            self.H, self.h = H, h  # as the user gave them
            # rows scaled to unit norm (the same set): the slack is then the distance to each face, and ||[H I]||
            # stays near sigma_min([H I]) >= 1, which keeps default steps from shrinking with the rows' scale
            scale = torch.linalg.vector_norm(H, dim=1).clamp(min=1e-12)
            H, h = H / scale[:, None], h / scale
            self._H_unit, self._h_unit = H, h
            A = torch.cat([torch.cat([A, torch.zeros(A.shape[0], self.slack, dtype=dtype)], 1),
                           torch.cat([H, torch.eye(self.slack, dtype=dtype)], 1)])
            b = torch.cat([b, h])
        self.X = X
        self.A, self.b = A, b  # the mean constraint on u, used by exact oracles and the stationarity measure
        singular = torch.linalg.svdvals(A) if A.numel() else torch.zeros(1, dtype=dtype)
        self.A_norm = float(singular.max())
        # the smallest singular value on the range of A (redundant rows leave exact zeros, which carry no constraint)
        self.A_sigma_min = float(singular[singular > 1e-9 * self.A_norm].min()) if self.A_norm > 0 else 0.0
        self.x0 = self.lift(x0 if x0 is not None else torch.zeros(dim, dtype=dtype))
        self.stochastic_constraint = residual is not None

    # --- variables -------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Length of the internal variable u = (x, w)."""
        return self.dim + self.slack

    def lift(self, x: Tensor) -> Tensor:
        """x -> a projected u: the slack starts at max(h - Hx, 0)."""
        x = torch.as_tensor(x, dtype=self.dtype).reshape(-1)
        if x.numel() != self.dim:
            raise ValueError(f"x0 must have {self.dim} entries (got {x.numel()})")
        if self.slack:
            x = self.bounds.project(x)
            return torch.cat([x, torch.clamp(self._h_unit - self._H_unit @ x, min=0)])
        return self.project(x)

    def unlift(self, u: Tensor) -> Tensor:
        return u[: self.dim]

    def project(self, u: Tensor) -> Tensor:
        if self.slack:
            return torch.cat([self.bounds.project(u[: self.dim]), torch.clamp(u[self.dim:], min=0)])
        return self.X.project(u)

    # --- oracles ---------------------------------------------------------------------------------------------
    def draw_xi(self, gen: torch.Generator) -> Any:
        return None if self.sample_xi is None else self.sample_xi(gen)

    def draw_zeta(self, gen: torch.Generator) -> Any:
        return self.sample_zeta(gen) if self.stochastic_constraint else None

    def grad(self, u: Tensor, xi: Any) -> Tensor:
        """grad_x f(x; xi) (zero on the slack)."""
        if self._gradient is not None:
            return self._pad(self._gradient(u[: self.dim], xi))
        return self._grad(lambda x: self.objective(x, xi), u)

    def full_grad(self, u: Tensor) -> Tensor:
        if self.full_objective is None:
            raise ValueError(f"{self.name}: no full objective given; pass full_objective= for exact oracles")
        if self._full_gradient is not None:
            return self._pad(self._full_gradient(u[: self.dim]))
        return self._grad(self.full_objective, u)

    def value(self, u: Tensor) -> float:
        return float(self.full_objective(self.unlift(u))) if self.full_objective is not None else float("nan")

    def residual(self, u: Tensor, zeta: Any = None) -> Tensor:
        """r(u, zeta) with mean Au - b; the exact Au - b when zeta is None."""
        if zeta is None:
            return self.A @ u - self.b
        r = self._residual(self.unlift(u), zeta)
        if self.slack:
            r = torch.cat([r, self._H_unit @ u[: self.dim] + u[self.dim:] - self._h_unit])
        return r

    def transpose_apply(self, u: Tensor, zeta: Any, *vectors: Tensor) -> list[Tensor]:
        """A(zeta)^T v for each v: the vector-Jacobian product of the affine residual (A^T v when zeta is None)."""
        if zeta is None:
            return [self.A.T @ v for v in vectors]
        u = u.detach().requires_grad_(True)
        r = self.residual(u, zeta)
        return [torch.autograd.grad(r, u, v, retain_graph=i < len(vectors) - 1)[0] for i, v in enumerate(vectors)]

    def _grad(self, fn: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
        x = u[: self.dim].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(x), x)
        return self._pad(g)

    def _pad(self, g: Tensor) -> Tensor:
        return torch.cat([g, torch.zeros(self.slack, dtype=self.dtype)]) if self.slack else g

    def _estimate_mean_constraint(self) -> tuple[Tensor, Tensor]:
        """E[A(zeta)] and E[b(zeta)] from many draws (fixed seed): an affine residual gives -b(zeta) at x = 0 and
        column j of A(zeta) as r(e_j) - r(0)."""
        gen = torch.Generator().manual_seed(12345)
        points = torch.cat([torch.zeros(1, self.dim, dtype=self.dtype), torch.eye(self.dim, dtype=self.dtype)])
        total = 0
        with torch.no_grad():
            for _ in range(MEAN_ESTIMATE_DRAWS):
                zeta = self.sample_zeta(gen)
                total = total + torch.stack([self._residual(p, zeta) for p in points], 1)
        mean = total / MEAN_ESTIMATE_DRAWS
        return mean[:, 1:] - mean[:, :1], -mean[:, 0]
