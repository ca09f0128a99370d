"""The problems raylab ships (each a `raylab.constrained.ConstrainedProblem`, built from a seed, float64).

    nonconvex_qp(dim, constraints, X="box"|"simplex", m, M, noise)   F(x) = 1/2 x^T Q x + c^T x, eig(Q) in [-m, M],
        Ax = b with b = A x_feas for a random interior point x_feas (so the problem is feasible), X = [0, 1]^n or
        the unit simplex. f(x; xi) = F(x) + noise (e1^T x + ((e2^T x)^2 - ||x||^2) / 2) with e1, e2 ~ N(0, I):
        additive and multiplicative gradient noise, both mean zero.
    sampled_constraint_qp(..., constraint_noise)   the same, with A(zeta) = A + sA E and b(zeta) = b + sA e.
    fair_logistic(n, dim, batch, stochastic_constraint)   logistic regression on synthetic data where a feature is
        correlated with a protected group; the constraint asks that both groups get the same mean score,
        (mean_{g=0} a - mean_{g=1} a)^T w = 0, given exactly or as (a_i - a_j)^T w for a random pair across groups.
    hs44(bounds_in_H, noise)   Hock-Schittkowski 44: a bilinear (indefinite) objective over a polyhedron of 6 rows
        and x >= 0; local minima x = (0, 3, 0, 4) (F = -15, the global one) and (3, 0, 4, 0) (F = -13).
        `bounds_in_H=True` folds x >= 0 into H as 4 more rows (10 slacks) instead of projecting onto it.
    hs35(noise)   Hock-Schittkowski 35: a convex quadratic, x1 + x2 + 2 x3 <= 3 and x >= 0; x = (4/3, 7/9, 4/9),
        F = 1/9. Both HS problems take f(x; xi) = F(x) + noise xi^T x, xi ~ N(0, I) (deterministic at noise 0).
    make_problem(spec)   one of the above from a plain dict {"kind": ..., parameters} (what crosses processes).
"""
from __future__ import annotations

import math

import torch

from raylab.constrained.problem import ConstrainedProblem
from raylab.constrained.sets import Box, Polyhedron, Simplex

DT = torch.float64


def _qp_data(dim: int, constraints: int, X: str, m: float, M: float, seed: int):
    if X not in ("box", "simplex"):
        raise ValueError(f"X must be 'box' or 'simplex' (got {X!r})")
    if constraints < 1 or constraints >= dim:
        raise ValueError(f"constraints must be between 1 and dim - 1 (got {constraints} for dim {dim})")
    if m < 0 or M <= 0:
        raise ValueError(f"need m >= 0 and M > 0 (got m={m}, M={M})")
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=DT))
    eig = -m + (M + m) * torch.rand(dim, generator=g, dtype=DT)
    eig[0], eig[-1] = -m, M
    Q = U @ torch.diag(eig) @ U.T
    c = torch.randn(dim, generator=g, dtype=DT)
    A = torch.randn(constraints, dim, generator=g, dtype=DT) / math.sqrt(dim)
    if X == "box":
        x_feas, Xset, x0 = 0.2 + 0.6 * torch.rand(dim, generator=g, dtype=DT), Box(0.0, 1.0), torch.zeros(dim, dtype=DT)
    else:
        w = 0.5 + torch.rand(dim, generator=g, dtype=DT)
        x_feas, Xset, x0 = w / w.sum(), Simplex(), torch.full((dim,), 1.0 / dim, dtype=DT)
    return Q, c, A, A @ x_feas, x_feas, Xset, x0, g


def _qp_functions(Q, c, dim: int, noise: float):
    def full(x):
        return 0.5 * x @ Q @ x + c @ x

    def objective(x, xi):
        e1, e2 = xi
        return full(x) + noise * (e1 @ x + 0.5 * ((e2 @ x) ** 2 - x @ x))

    def full_gradient(x):
        return Q @ x + c

    def gradient(x, xi):
        e1, e2 = xi
        return Q @ x + c + noise * (e1 + (e2 @ x) * e2 - x)

    def sample_xi(gen):
        return torch.randn(2, dim, generator=gen, dtype=DT).unbind(0)

    return dict(objective=objective, sample_xi=sample_xi, full_objective=full, gradient=gradient,
                full_gradient=full_gradient)


def nonconvex_qp(dim: int = 20, constraints: int = 5, X: str = "box", m: float = 1.0, M: float = 10.0,
                 noise: float = 0.1, seed: int = 0) -> ConstrainedProblem:
    Q, c, A, b, x_feas, Xset, x0, _ = _qp_data(dim, constraints, X, m, M, seed)
    p = ConstrainedProblem(dim=dim, **_qp_functions(Q, c, dim, noise), X=Xset, A=A, b=b, x0=x0,
                weak_convexity=m, smoothness=M, name=f"nonconvex_qp_{X}")
    p.x_feasible = x_feas
    return p


def sampled_constraint_qp(dim: int = 20, constraints: int = 5, X: str = "box", m: float = 1.0, M: float = 10.0,
                          noise: float = 0.1, constraint_noise: float = 0.2, seed: int = 0) -> ConstrainedProblem:
    Q, c, A, b, x_feas, Xset, x0, _ = _qp_data(dim, constraints, X, m, M, seed)
    k, scale = constraints, constraint_noise / math.sqrt(dim)

    def residual(x, zeta):
        E, e = zeta
        return (A + scale * E) @ x - (b + scale * e)

    def sample_zeta(gen):
        return torch.randn(k, dim, generator=gen, dtype=DT), torch.randn(k, generator=gen, dtype=DT)

    p = ConstrainedProblem(dim=dim, **_qp_functions(Q, c, dim, noise), X=Xset, A=A, b=b, residual=residual,
                sample_zeta=sample_zeta, x0=x0, weak_convexity=m, smoothness=M, name=f"sampled_constraint_qp_{X}")
    p.x_feasible = x_feas
    return p


def fair_logistic(n: int = 2000, dim: int = 10, batch: int = 16, stochastic_constraint: bool = False,
                  radius: float = 5.0, l2: float = 1e-2, seed: int = 0) -> ConstrainedProblem:
    if n < 4 or dim < 2 or batch < 1:
        raise ValueError(f"need n >= 4, dim >= 2, batch >= 1 (got n={n}, dim={dim}, batch={batch})")
    g = torch.Generator().manual_seed(seed)
    group = torch.rand(n, generator=g) < 0.4
    feats = torch.randn(n, dim, generator=g, dtype=DT)
    feats[:, 0] += 1.5 * group.to(DT)  # a feature that leaks group membership
    feats[:, -1] = 1.0  # intercept
    w_true = torch.randn(dim, generator=g, dtype=DT)
    w_true[0] = 2.0
    labels = (torch.rand(n, generator=g, dtype=DT) < torch.sigmoid(feats @ w_true)).to(DT)
    idx0, idx1 = torch.nonzero(~group).flatten(), torch.nonzero(group).flatten()
    A = (feats[idx0].mean(0) - feats[idx1].mean(0)).unsqueeze(0)

    def loss(w, rows):
        return torch.nn.functional.binary_cross_entropy_with_logits(feats[rows] @ w, labels[rows]) + l2 / 2 * w @ w

    def gradient(w, rows):
        a = feats[rows]
        return a.T @ (torch.sigmoid(a @ w) - labels[rows]) / a.shape[0] + l2 * w

    def residual(w, zeta):
        i, j = zeta
        return (feats[i] - feats[j]).unsqueeze(0) @ w

    def sample_zeta(gen):
        return (idx0[torch.randint(len(idx0), (), generator=gen)], idx1[torch.randint(len(idx1), (), generator=gen)])

    smooth = 0.25 * float(torch.linalg.matrix_norm(feats, ord=2)) ** 2 / n + l2
    return ConstrainedProblem(loss, dim, sample_xi=lambda gen: torch.randint(n, (batch,), generator=gen),
                   full_objective=lambda w: loss(w, slice(None)), gradient=gradient,
                   full_gradient=lambda w: gradient(w, slice(None)), X=Box(-radius, radius), A=A, b=torch.zeros(1),
                   residual=residual if stochastic_constraint else None,
                   sample_zeta=sample_zeta if stochastic_constraint else None,
                   weak_convexity=0.0, smoothness=smooth, name="fair_logistic")


def _hock_schittkowski(F, grad_F, H, h, noise: float, weak_convexity: float, smoothness: float, name: str,
                       lower=None) -> ConstrainedProblem:
    H, h = torch.tensor(H, dtype=DT), torch.tensor(h, dtype=DT)
    dim = H.shape[1]
    stochastic = dict(objective=lambda x, xi: F(x) + noise * xi @ x, gradient=lambda x, xi: grad_F(x) + noise * xi,
                      sample_xi=lambda gen: torch.randn(dim, generator=gen, dtype=DT)) if noise > 0 else dict(
                          objective=lambda x, xi: F(x), gradient=lambda x, xi: grad_F(x))
    return ConstrainedProblem(dim=dim, **stochastic, full_objective=F, full_gradient=grad_F,
                              X=Polyhedron(H, h, lower=lower), A=torch.zeros(0, dim, dtype=DT),
                              b=torch.zeros(0, dtype=DT), weak_convexity=weak_convexity, smoothness=smoothness,
                              name=name)


def hs44(bounds_in_H: bool = False, noise: float = 0.0) -> ConstrainedProblem:
    def F(x):
        return x[0] - x[1] - x[2] - x[0] * x[2] + x[0] * x[3] + x[1] * x[2] - x[1] * x[3]

    def grad_F(x):
        return torch.stack([1 - x[2] + x[3], -1 + x[2] - x[3], -1 - x[0] + x[1], x[0] - x[1]])

    H = [[1, 2, 0, 0], [4, 1, 0, 0], [3, 4, 0, 0], [0, 0, 2, 1], [0, 0, 1, 2], [0, 0, 1, 1]]
    h = [8, 12, 12, 8, 8, 5]
    if bounds_in_H:
        H, h = H + [[-float(i == j) for j in range(4)] for i in range(4)], h + [0] * 4
    # the Hessian [[0, B], [B^T, 0]] with B = [[-1, 1], [1, -1]] has eigenvalues -2, 0, 0, 2
    return _hock_schittkowski(F, grad_F, H, h, noise, 2.0, 2.0, "hs44", lower=None if bounds_in_H else 0.0)


def hs35(noise: float = 0.0) -> ConstrainedProblem:
    Q = torch.tensor([[4.0, 2, 2], [2, 4, 0], [2, 0, 2]], dtype=DT)
    c = torch.tensor([-8.0, -6, -4], dtype=DT)

    def F(x):
        return 9 + c @ x + 0.5 * x @ Q @ x

    def grad_F(x):
        return c + Q @ x

    return _hock_schittkowski(F, grad_F, [[1, 1, 2]], [3], noise, 0.0, float(torch.linalg.eigvalsh(Q).max()),
                              "hs35", lower=0.0)


def make_problem(spec: dict) -> ConstrainedProblem:
    """A shipped problem from {"kind": name, **its parameters}; unknown kinds and parameters are errors."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in SHIPPED:
        raise ValueError(f"problem.kind: unknown problem {kind!r}; expected one of {sorted(SHIPPED)}")
    return SHIPPED[kind](**spec)


SHIPPED = {"nonconvex_qp": nonconvex_qp, "sampled_constraint_qp": sampled_constraint_qp,
           "fair_logistic": fair_logistic, "hs44": hs44, "hs35": hs35}
