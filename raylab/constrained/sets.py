"""Feasible sets X and their Euclidean projections (pure torch).

    Box(lower, upper)      elementwise bounds (scalars or tensors; None means unbounded on that side)
    NonNegative()          the orthant x >= 0
    Simplex(radius=1)      {x >= 0, sum x = radius}
    Polyhedron(H, h, lower, upper)   {Hx <= h, lower <= x <= upper} (bounds optional): not projected onto;
                           `raylab.constrained.problem.ConstrainedProblem` rewrites Hx <= h with a slack w as
                           Hx + w = h, w >= 0 and projects (x, w) onto the bounds times R^p_+ instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


class Set:
    def project(self, x: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Free(Set):
    """All of R^n (no set constraint)."""

    def project(self, x: Tensor) -> Tensor:
        return x


@dataclass(frozen=True)
class Box(Set):
    lower: float | Tensor | None = None
    upper: float | Tensor | None = None

    def __post_init__(self):
        if self.lower is not None and self.upper is not None and bool(torch.any(
                torch.as_tensor(self.lower) > torch.as_tensor(self.upper))):
            raise ValueError("Box: lower must not exceed upper")

    def project(self, x: Tensor) -> Tensor:
        if self.lower is None and self.upper is None:
            return x
        return torch.clamp(x, min=_bound(self.lower, x), max=_bound(self.upper, x))


def _bound(bound: float | Tensor | None, x: Tensor) -> float | Tensor | None:
    return bound if bound is None or isinstance(bound, (int, float)) else torch.as_tensor(bound, dtype=x.dtype)


@dataclass(frozen=True)
class NonNegative(Set):
    def project(self, x: Tensor) -> Tensor:
        return torch.clamp(x, min=0)


@dataclass(frozen=True)
class Simplex(Set):
    radius: float = 1.0

    def __post_init__(self):
        if not self.radius > 0:
            raise ValueError(f"Simplex: radius must be positive (got {self.radius})")

    def project(self, x: Tensor) -> Tensor:
        """Sort-based projection (Held, Wolfe & Crowder): the threshold theta with sum max(x - theta, 0) = r."""
        u, _ = torch.sort(x, descending=True)
        cumsum = torch.cumsum(u, 0) - self.radius
        k = torch.arange(1, x.numel() + 1, dtype=x.dtype)
        active = u - cumsum / k > 0
        last = int(torch.nonzero(active)[-1])
        theta = cumsum[last] / (last + 1)
        return torch.clamp(x - theta, min=0)


@dataclass(frozen=True)
class Polyhedron(Set):
    """{x : H x <= h, lower <= x <= upper}. Projection onto a general polyhedron is itself a QP, so the solvers
    never call it: the problem adds slack variables for Hx <= h (see the module docstring) and projects onto the
    bounds directly, so simple bounds such as x >= 0 need no rows of H."""

    H: Tensor
    h: Tensor
    lower: float | Tensor | None = None
    upper: float | Tensor | None = None

    def __post_init__(self):
        if self.H.ndim != 2 or self.h.ndim != 1 or self.H.shape[0] != self.h.shape[0]:
            raise ValueError(f"Polyhedron: H must be (p, n) and h (p,), got {tuple(self.H.shape)} and "
                             f"{tuple(self.h.shape)}")
        self.bounds()  # checks lower <= upper

    def bounds(self) -> Box:
        """The simple bounds as a Box (unbounded where not given)."""
        return Box(self.lower, self.upper)

    def project(self, x: Tensor) -> Tensor:
        raise ValueError("Polyhedron: no direct projection; a ConstrainedProblem reformulates it with slack variables")
