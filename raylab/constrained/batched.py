"""Many runs of one method at once on a sampled-constraint QP: the update rules of `raylab.constrained.methods`
written over a leading batch dimension, so that a benchmark's seeds and grid points advance together.

    qp = BatchedQP(sampled_constraint_qp(...), noise=0.1, constraint_noise=0.1)
    runs = BatchedRuns("ssl_alm", qp, hypers, samples=512_000, seeds=[0, 0, 1, 1])   # one hyper dict per run
    runs.advance_to(check)                          # to `check` gradient evaluations (the same for every run)
    values = BatchedMeter(qp, problem, mu)(runs.output())   # (B,) stationarity of the outputs

f(x; xi) = F(x) + noise (e1^T x + ((e2^T x)^2 - ||x||^2) / 2) and r(x, zeta) = (A + sE) x - (b + se) as in
`raylab.constrained.problems.sampled_constraint_qp`, X the box [0, 1]^n. A batch draws its noise in blocks
(`Draws`, one generator per run), so a run's noise differs from a per-run method's stream, but given the same
draws run b equals `make_optimizer(problem, method, samples, **hyper_b)` step for step:
tests/constrained/test_batched.py replays a batch's draws to the per-run methods and checks it to 1e-12.
Methods: ssl_alm, storm_alm, sgda, penalty (with its decay and averaged output) and cooper_alm (cooper's augmented
Lagrangian: one zeta per step, dual ascent first, the same as `raylab.bench.alm.CooperStep`).
"""
from __future__ import annotations

import math

import torch

from raylab.constrained.methods import storm_initial_batch, storm_iterations
from raylab.constrained.problem import ConstrainedProblem

Tensor = torch.Tensor
DT = torch.float64
CHUNK = 256
METHODS = ("ssl_alm", "storm_alm", "sgda", "penalty", "cooper_alm")


class BatchedQP:
    """The data of a sampled-constraint QP on the box, read off the problem (Q and c from its exact gradient)."""

    def __init__(self, problem: ConstrainedProblem, noise: float, constraint_noise: float):
        n = problem.dim
        self.n, self.k = n, problem.A.shape[0]
        origin = torch.zeros(n, dtype=DT)
        self.c = problem.full_grad(origin)
        self.Q = torch.stack([problem.full_grad(e) - self.c for e in torch.eye(n, dtype=DT)], 1)
        self.A, self.b, self.noise = problem.A, problem.b, noise
        self.s = constraint_noise / math.sqrt(n)
        self.x0 = problem.x0.clone()
        self.smoothness, self.A_norm = problem.smoothness, problem.A_norm

    def grad(self, x: Tensor, e1: Tensor, e2: Tensor) -> Tensor:
        return x @ self.Q.T + self.c + self.noise * (e1 + (e2 * x).sum(-1, keepdim=True) * e2 - x)

    def residual(self, x: Tensor, E: Tensor, e: Tensor) -> Tensor:
        return x @ self.A.T + self.s * torch.bmm(E, x[:, :, None])[:, :, 0] - (self.b + self.s * e)

    def transpose(self, E: Tensor, v: Tensor) -> Tensor:
        """A(zeta)^T v for v of shape (B, k), or for several vectors at once, (B, k, j) -> (B, n, j)."""
        if v.ndim == 3:
            return torch.matmul(self.A.T, v) + self.s * torch.bmm(E.transpose(1, 2), v)
        return v @ self.A + self.s * torch.bmm(E.transpose(1, 2), v[:, :, None])[:, :, 0]


class Draws:
    """The batch's noise, CHUNK iterations at a time: one generator per run (seeded with the run's seed), one call
    per run and chunk, float32 normals used in float64 (drawing the noise is much of a batched run's time).
    `iteration()` gives this iteration's `xi` draws as (e1, e2) and its `zeta` draws as (E, e), each with a
    leading batch dimension. A run's draws depend on its seed only, so runs dropped by `keep` cost nothing more
    and change no other run's draws; runs with the same seed see the same noise (common random numbers)."""

    def __init__(self, seeds: list[int], n: int, k: int, xi_per_iteration: int, zeta_per_iteration: int):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.n, self.k, self.nx, self.nz = n, k, xi_per_iteration, zeta_per_iteration
        self.sizes = (self.nx * 2 * n, self.nz * k * n, self.nz * k)  # xi, E, e per iteration
        self.block: Tensor | None = None  # (runs, CHUNK, draws per iteration)
        self.pos = CHUNK

    def _refill(self) -> None:
        B, per = len(self.gens), sum(self.sizes)
        if self.block is None or self.block.shape[0] != B:
            self.block = torch.empty(B, CHUNK, per, dtype=torch.float32)  # float32: half the memory traffic
        for b, g in enumerate(self.gens):
            torch.randn(CHUNK, per, generator=g, dtype=torch.float32, out=self.block[b])
        self.pos = 0

    def iteration(self) -> tuple[list, list]:
        """([(e1, e2)] * xi_per_iteration, [(E, e)] * zeta_per_iteration) for the next iteration."""
        if self.pos == CHUNK:
            self._refill()
        row, self.pos = self.block[:, self.pos].to(DT), self.pos + 1
        B, (a, b, _), n, k = row.shape[0], self.sizes, self.n, self.k
        xi = row[:, :a].view(B, self.nx, 2, n)
        E, e = row[:, a:a + b].view(B, self.nz, k, n), row[:, a + b:].view(B, self.nz, k)
        return [(xi[:, j, 0], xi[:, j, 1]) for j in range(self.nx)], [(E[:, j], e[:, j]) for j in range(self.nz)]

    def keep(self, rows: Tensor) -> None:
        """Drops every run not in `rows` (indices into the current batch); the others' draws are unchanged."""
        self.gens = [self.gens[i] for i in rows.tolist()]
        if self.block is not None:
            self.block = self.block[rows]

    def initial_xi(self, count: int) -> list[tuple[Tensor, Tensor]]:
        """`count` xi draws per run before the first iteration (STORM's initial batch)."""
        d = torch.stack([torch.randn(count, 2, self.n, generator=g, dtype=torch.float32) for g in self.gens],
                        1).to(DT)
        return [(d[j, :, 0], d[j, :, 1]) for j in range(count)]


def _column(hypers: list[dict], key: str, default: float | None = None) -> Tensor:
    values = [h.get(key, default) for h in hypers]
    return torch.tensor([math.inf if v is None else float(v) for v in values], dtype=DT)[:, None]


class BatchedRuns:
    """B runs of `method`, run b with `hypers[b]` (every hyper-parameter given: no budget defaults here) and
    generator seed `seeds[b]`, each for the iterations `samples` buys."""

    DRAWS = {"ssl_alm": (1, 2), "storm_alm": (1, 2), "sgda": (1, 2), "penalty": (1, 2), "cooper_alm": (1, 1)}

    def __init__(self, method: str, qp: BatchedQP, hypers: list[dict], samples: int, seeds: list[int]):
        if method not in METHODS:
            raise ValueError(f"method: {method!r} has no batched form; expected one of {list(METHODS)}")
        if len(hypers) != len(seeds) or not hypers:
            raise ValueError(f"give one hyper dict per seed (got {len(hypers)} and {len(seeds)})")
        self.method, self.qp, B = method, qp, len(hypers)
        self.T = storm_iterations(samples) if method == "storm_alm" else samples
        keys = {"ssl_alm": ("tau", "eta", "beta", "rho", "mu", "M_y"), "storm_alm": ("tau", "eta", "beta", "rho",
                "mu", "M_y", "alpha"), "sgda": ("tau", "eta"), "penalty": ("tau", "rho", "power", "decay", "average"),
                "cooper_alm": ("lr", "dual_lr", "rho")}[method]
        self.h = {key: _column(hypers, key) for key in keys}
        if method == "sgda":  # the ALM step with rho = mu = beta = 0 and no safeguard
            zero = torch.zeros(B, 1, dtype=DT)
            self.h.update(rho=zero, mu=zero, beta=zero, M_y=torch.full((B, 1), math.inf, dtype=DT))
        self.draws = Draws(seeds, qp.n, qp.k, *self.DRAWS[method])
        self.x = qp.x0.expand(B, -1).clone()
        self.z = self.x.clone()
        self.y = torch.zeros(B, qp.k, dtype=DT)
        self.d = None
        self.t = self.samples = 0
        self.safeguard_resets = torch.zeros(B, dtype=torch.long)

    @property
    def done(self) -> bool:
        return self.t >= self.T

    def advance_to(self, samples: int) -> int:
        """Steps every run until `samples` gradient evaluations (or the end); returns the evaluations so far."""
        while self.samples < samples and not self.done:
            self.step()
        return self.samples

    def output(self) -> Tensor:
        return self.x if self.method in ("cooper_alm", "sgda") else self.z

    def keep(self, rows: Tensor) -> None:
        """Continues only the runs `rows` (indices into the current batch); the others stop where they are."""
        self.x, self.z, self.y = self.x[rows], self.z[rows], self.y[rows]
        self.d = None if self.d is None else self.d[rows]
        self.h = {k: v[rows] for k, v in self.h.items()}
        self.safeguard_resets = self.safeguard_resets[rows]
        self.draws.keep(rows)

    def step(self) -> None:
        getattr(self, "_" + self.method)()
        self.t += 1

    def _alm(self, g: Tensor, zetas: list) -> Tensor:
        """Steps 1-4 of the ALM iteration given the gradient estimate g; returns the pre-step x."""
        qp, h, x = self.qp, self.h, self.x
        v = qp.residual(x, *zetas[0])
        y = self.y + h["eta"] * v
        fired = torch.linalg.vector_norm(y, dim=1, keepdim=True) >= h["M_y"]
        self.y = torch.where(fired, torch.zeros_like(y), y)
        self.safeguard_resets += fired[:, 0]
        At_y, At_v = qp.transpose(zetas[1][0], torch.stack([self.y, v], 2)).unbind(2)
        self.x = (x - h["tau"] * (g + At_y + h["rho"] * At_v + h["mu"] * (x - self.z))).clamp(0.0, 1.0)
        self.z = self.z + h["beta"] * (x - self.z)
        return x

    def _ssl_alm(self) -> None:
        (xi,), zetas = self.draws.iteration()
        self.samples += 1
        self._alm(self.qp.grad(self.x, *xi), zetas)

    _sgda = _ssl_alm

    def _storm_alm(self) -> None:
        if self.d is None:
            n = storm_initial_batch(self.T)
            grads = [self.qp.grad(self.x, *xi) for xi in self.draws.initial_xi(n)]
            self.d = sum(grads) / n
            self.samples += n
        (xi,), zetas = self.draws.iteration()
        x_t = self._alm(self.d, zetas)
        g_new, g_old = self.qp.grad(self.x, *xi), self.qp.grad(x_t, *xi)
        self.d = g_new + (1.0 - self.h["alpha"]) * (self.d - g_old)
        self.samples += 2

    def _penalty(self) -> None:
        qp, h = self.qp, self.h
        (xi,), zetas = self.draws.iteration()
        rho_t = h["rho"] * (1 + self.t) ** h["power"]
        tau_t = h["tau"] * (1 + self.t) ** -h["decay"] / (qp.smoothness + rho_t * qp.A_norm ** 2)
        g = qp.grad(self.x, *xi)
        At_v = qp.transpose(zetas[1][0], qp.residual(self.x, *zetas[0]))
        self.x = (self.x - tau_t * (g + rho_t * At_v)).clamp(0.0, 1.0)
        self.samples += 1
        a = h["average"]  # the weighted mean of Penalty.step: weight a / (t + a - 1) on x_t, t counted from 1
        averaged = self.z + (self.x - self.z) * (a / (self.t + a)).clamp(max=1.0)
        self.z = torch.where(a > 0, averaged, self.x)

    def _cooper_alm(self) -> None:
        qp, h = self.qp, self.h
        (xi,), (zeta,) = self.draws.iteration()
        violation = qp.residual(self.x, *zeta)
        self.y = self.y + h["dual_lr"] * violation
        g = qp.grad(self.x, *xi)
        self.x = (self.x - h["lr"] * (g + qp.transpose(zeta[0], self.y + h["rho"] * violation))).clamp(0.0, 1.0)
        self.samples += 1


class BatchedMeter:
    """`raylab.constrained.StationarityMeter` for B points at once on a BatchedQP: the same inexact ALM (penalty
    rho = (L + mu) / sigma_min(A)^2) with FISTA and adaptive restart inside, each run frozen once it meets the
    tolerance; warm-started per run from its previous solution. Tested against the per-run meter."""

    def __init__(self, qp: BatchedQP, problem: ConstrainedProblem, mu: float, tol: float = 1e-6,
                 max_outer: int = 300, max_inner: int = 3000):
        self.qp, self.mu, self.tol, self.max_outer, self.max_inner = qp, mu, tol, max_outer, max_inner
        self.rho = (problem.smoothness + mu) / max(problem.A_sigma_min ** 2, 1e-12)
        self.lipschitz = problem.smoothness + mu + self.rho * problem.A_norm ** 2
        self.x: Tensor | None = None
        self.y: Tensor | None = None

    def __call__(self, z: Tensor) -> Tensor:
        """mu ||z_b - xbar(z_b)|| for each row b of z."""
        return self.mu * torch.linalg.vector_norm(z - self.prox_point(z), dim=1)

    def prox_point(self, z: Tensor) -> Tensor:
        qp, tol = self.qp, self.tol
        x = z.clamp(0.0, 1.0) if self.x is None else self.x
        y = torch.zeros(z.shape[0], qp.k, dtype=DT) if self.y is None else self.y
        inner_tol = torch.full((z.shape[0],), tol, dtype=DT)
        active = torch.ones(z.shape[0], dtype=torch.bool)
        for _ in range(self.max_outer):
            x_new, inner_done = self._minimize_lagrangian(x, y, z, inner_tol, active)
            r = x_new @ qp.A.T - qp.b
            x = torch.where(active[:, None], x_new, x)
            y = torch.where(active[:, None], y + self.rho * r, y)
            infeasibility = torch.linalg.vector_norm(r, dim=1)
            converged = inner_done & (inner_tol <= tol) & (infeasibility <= tol)
            inner_tol = torch.where(active, torch.clamp(0.1 * infeasibility * self.rho, min=tol), inner_tol)
            active = active & ~converged
            if not bool(active.any()):
                break
        self.x, self.y, self.converged = x, y, ~active
        return x

    def keep(self, rows: Tensor) -> None:
        """Keeps the warm starts of the points `rows` only (as BatchedRuns.keep)."""
        if self.x is not None:
            self.x, self.y = self.x[rows], self.y[rows]

    def _minimize_lagrangian(self, x, y, z, tol, active):
        qp, step, L = self.qp, 1.0 / self.lipschitz, self.lipschitz

        def grad(v):
            return v @ qp.Q.T + qp.c + (y + self.rho * (v @ qp.A.T - qp.b)) @ qp.A + self.mu * (v - z)

        v, t = x, torch.ones(x.shape[0], 1, dtype=DT)
        done = ~active
        for _ in range(self.max_inner):
            x_new = (v - step * grad(v)).clamp(0.0, 1.0)
            met = (torch.linalg.vector_norm(x_new - v, dim=1) * L <= tol) & ~done
            x = torch.where(met[:, None], x_new, x)
            done = done | met
            if bool(done.all()):
                break
            restart = ((v - x_new) * (x_new - x)).sum(1) > 0
            t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
            go = ~done & ~restart
            v_next = x_new + ((t - 1) / t_new) * (x_new - x)
            v = torch.where(go[:, None], v_next, torch.where((~done & restart)[:, None], x, v))
            x = torch.where(go[:, None], x_new, x)
            t = torch.where(go[:, None], t_new, torch.where((~done & restart)[:, None], torch.ones_like(t), t))
        return x, done & active
