"""The solvers, one object per run: `step()` performs one iteration, `state_dict()` / `load_state_dict()` carry
everything (iterates, counters and the generator's state) so a run checkpoints, resumes bit for bit and moves
between processes.

    ssl_alm    dual-safeguarded stochastic smoothed linearized ALM (oracle 1)          T = samples
    storm_alm  the same with the STORM gradient estimator (oracle 2: the same xi at     T = (samples - N) // 2,
               two points, two gradient evaluations), started from N = T^(1/6) samples    N = ceil(T^(1/6))
    prox_alm   the deterministic smoothed proximal ALM of Zhang & Luo (2020): full      T = samples
               gradient, exact residual, z updated with x_{t+1}, no safeguard
    penalty    single-loop stochastic quadratic penalty, rho_t = rho (1 + t)^power,     T = samples
               tau_t = s / (L + rho_t ||A||^2)  (after Alacaoglu & Wright 2024)
    sgda       stochastic gradient descent-ascent on the plain Lagrangian               T = samples

`samples` counts gradient evaluations of f (one xi at one point); draws of zeta for a stochastic constraint are
counted separately (`constraint_samples`). Every method calls the shared rules of `raylab.constrained.updates`.

Default step sizes come from the budget T through one factor s (capped at 1): s = (T0/T)^(1/2) for ssl_alm,
penalty and sgda, s = (T0/T)^(1/3) for storm_alm, s = 1 for prox_alm; and from quantities the problem computes:
L (smoothness), m (weak convexity), ||A|| and sigma_min(A) of the constraint rows (slack rows included, see
`default_rho`). With L_K = L + mu + rho ||A||^2,
    rho = max(L / ||A||^2, 2m / sigma_min^2),   tau = s / L_K,   eta = s * rho / 2,   beta = s * mu / (2 L_K),
    alpha (STORM) = 0.03 s^2,   SGDA: tau = eta = s / (L + ||A||^2).
Any of them can be passed explicitly. `oracle="exact"` swaps in the full gradient and the exact residual.
"""
from __future__ import annotations

import math

import torch

from raylab.constrained.problem import ConstrainedProblem
from raylab.constrained.stationarity import default_mu
from raylab.constrained.updates import dual_step, primal_step, prox_center_step, storm_direction

Tensor = torch.Tensor
T0 = 50  # budgets up to T0 take the largest stable steps; beyond it steps shrink at the theory's rate
DEFAULT_M_Y = 1e3
# STORM's alpha = STORM_ALPHA s^2: the theorem's T^(-2/3) schedule with a constant that does not stall. At 1.0 the
# estimator forgets its past too fast and behaves like SSL-ALM's plain gradient (nonconvex_qp, noise 1.0: fitted
# T ~ eps^-4.7, eps 0.073 at 64k samples); at 0.03 it fits eps^-2.6 and reaches 0.028 (docs/constrained.md).
STORM_ALPHA = 0.03


def default_rho(p: ConstrainedProblem) -> float:
    """max(L / ||A||^2, 2m / sigma_min(A)^2): the first balances the penalty's curvature against F's; the second
    makes f + rho/2 ||Au - b||^2 convex across the constraints' range with margin 2 (rho sigma_min^2 >= 2m), which
    keeps iterates from running off along F's negative curvature where X is unbounded (a slack x is free)."""
    if p.A_norm == 0:
        return 0.0
    return max(p.smoothness / p.A_norm ** 2, 2 * p.weak_convexity / p.A_sigma_min ** 2)


class Optimizer:
    """Common state and bookkeeping; subclasses define `iterations`, `_defaults` and `step`."""

    name = ""
    rate = 0.5  # exponent of the step-size factor s = (T0/T)^rate

    def __init__(self, problem: ConstrainedProblem, samples: int, seed: int = 0, x0: Tensor | None = None,
                 oracle: str = "stochastic", z_update: str = "pre", **hyper):
        if samples < 1:
            raise ValueError(f"samples must be at least 1 (got {samples})")
        if oracle not in ("stochastic", "exact"):
            raise ValueError(f"oracle must be 'stochastic' or 'exact' (got {oracle!r})")
        if z_update not in ("pre", "post"):
            raise ValueError(f"z_update must be 'pre' or 'post' (got {z_update!r})")
        self.problem, self.samples_budget, self.oracle, self.z_update = problem, int(samples), oracle, z_update
        self.T = self.iterations(int(samples))
        if self.T < 1:
            raise ValueError(f"{self.name}: samples={samples} buys no iteration")
        allowed = set(self._defaults(problem, 1.0, 1.0, 1.0))
        unknown = set(hyper) - allowed
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter {sorted(unknown)[0]!r}; expected one of "
                             f"{sorted(allowed)}")
        mu = float(hyper.get("mu", default_mu(problem)))
        rho = float(hyper.get("rho", default_rho(problem)))
        s = min(1.0, (T0 / self.T) ** self.rate)
        self.hyper = {**self._defaults(problem, s, mu, rho), **hyper}
        for key, value in self.hyper.items():
            if value is not None and value < 0:
                raise ValueError(f"{self.name}: {key} must be non-negative (got {value})")
        self.gen = torch.Generator().manual_seed(int(seed))
        self.x = problem.lift(x0) if x0 is not None else problem.x0.clone()
        self.z = self.x.clone()
        self.y = torch.zeros(problem.A.shape[0], dtype=problem.dtype)
        self.t = self.samples = self.oracle_calls = self.constraint_samples = self.safeguard_resets = 0

    # --- to be defined by each method --------------------------------------------------------------------------
    def iterations(self, samples: int) -> int:
        return samples

    def _defaults(self, p: ConstrainedProblem, s: float, mu: float, rho: float) -> dict:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.t >= self.T

    def output(self) -> Tensor:
        """The point the method reports (and whose stationarity is measured): z for the ALMs, x otherwise."""
        return self.z

    def multiplier(self) -> Tensor:
        return self.y

    def _gradient(self, u: Tensor, xi=None) -> Tensor:
        """One gradient evaluation at u: with a given xi (STORM's second point), or a fresh oracle call."""
        self.samples += 1
        if self.oracle == "exact":
            return self.problem.full_grad(u)
        return self.problem.grad(u, xi if xi is not None else self._xi())

    def _xi(self):
        self.oracle_calls += 1
        return self.problem.draw_xi(self.gen)

    def _zeta(self):
        if self.oracle == "exact" or not self.problem.stochastic_constraint:
            return None
        self.constraint_samples += 1
        return self.problem.draw_zeta(self.gen)

    def _alm_iteration(self, grad_f: Tensor, h: dict) -> Tensor:
        """Steps 1-4 of DESIGN.md given an estimate of grad f(x_t) and the step sizes h; returns x_t."""
        p, x = self.problem, self.x
        v = p.residual(x, self._zeta())
        self.y, fired = dual_step(self.y, v, h["eta"], h["M_y"])
        self.safeguard_resets += fired
        zeta = self._zeta()  # a fresh draw: A(zeta)^T v is unbiased for A^T (Ax - b) only if zeta is independent
        At_y, At_v = p.transpose_apply(x, zeta, self.y, v)
        self.x = primal_step(x, self.z, grad_f, At_y, At_v, tau=h["tau"], rho=h["rho"], mu=h["mu"],
                             project=p.project)
        self.z = prox_center_step(self.z, x if self.z_update == "pre" else self.x, h["beta"])
        self.t += 1
        return x

    def state_dict(self) -> dict:
        return {"method": self.name, "x": self.x.clone(), "z": self.z.clone(), "y": self.y.clone(), "t": self.t,
                "samples": self.samples, "oracle_calls": self.oracle_calls,
                "constraint_samples": self.constraint_samples,
                "safeguard_resets": self.safeguard_resets, "rng": self.gen.get_state(), "hyper": dict(self.hyper)}

    def load_state_dict(self, state: dict) -> None:
        if state["method"] != self.name:
            raise ValueError(f"state of {state['method']!r} cannot be loaded into {self.name!r}")
        self.x, self.z, self.y = state["x"].clone(), state["z"].clone(), state["y"].clone()
        self.t, self.samples, self.oracle_calls = state["t"], state["samples"], state["oracle_calls"]
        self.constraint_samples, self.safeguard_resets = state["constraint_samples"], state["safeguard_resets"]
        self.gen.set_state(state["rng"])
        self.hyper = dict(state["hyper"])


def _alm_defaults(p: ConstrainedProblem, s: float, mu: float, rho: float) -> dict:
    lk = p.smoothness + mu + rho * p.A_norm ** 2
    return {"tau": s / lk, "eta": s * rho / 2, "beta": s * mu / (2 * lk), "rho": rho, "mu": mu, "M_y": DEFAULT_M_Y}


class SSLALM(Optimizer):
    name = "ssl_alm"

    def _defaults(self, p, s, mu, rho):
        return _alm_defaults(p, s, mu, rho)

    def step(self) -> None:
        self._alm_iteration(self._gradient(self.x), self.hyper)


class ProxALM(SSLALM):
    """Deterministic: full gradients and exact residuals whatever the problem's samplers, z moved to x_{t+1}."""

    name = "prox_alm"
    rate = 0.0

    def __init__(self, problem: ConstrainedProblem, samples: int, seed: int = 0, x0: Tensor | None = None,
                 oracle: str = "exact", z_update: str = "post", **hyper):
        super().__init__(problem, samples, seed, x0, oracle=oracle, z_update=z_update, **hyper)

    def _defaults(self, p, s, mu, rho):
        return {**_alm_defaults(p, s, mu, rho), "M_y": None}


def storm_initial_batch(T: int) -> int:
    """N = ceil(T^(1/6)) samples average into STORM's first gradient estimate."""
    return math.ceil(T ** (1.0 / 6.0))


def storm_iterations(samples: int) -> int:
    """The largest T with 2T + N(T) <= samples (two gradient evaluations per iteration)."""
    T = samples // 2
    while T > 0 and 2 * T + storm_initial_batch(T) > samples:
        T -= 1
    return T


class StormALM(Optimizer):
    name = "storm_alm"
    rate = 1.0 / 3.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.d = None  # the STORM estimate of grad f(x_t), started lazily so that init is free of sampling

    def iterations(self, samples: int) -> int:
        return storm_iterations(samples)

    @staticmethod
    def initial_batch(T: int) -> int:
        return storm_initial_batch(T)

    def _defaults(self, p, s, mu, rho):
        return {**_alm_defaults(p, s, mu, rho), "alpha": STORM_ALPHA * s * s}

    def step(self) -> None:
        if self.d is None:
            n = self.initial_batch(self.T)
            self.d = sum(self._gradient(self.x) for _ in range(n)) / n
        x_t = self._alm_iteration(self.d, self.hyper)
        xi = None if self.oracle == "exact" else self._xi()
        g_new, g_old = self._gradient(self.x, xi), self._gradient(x_t, xi)
        self.d = storm_direction(self.d, g_new, g_old, self.hyper["alpha"])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "d": None if self.d is None else self.d.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.d = None if state["d"] is None else state["d"].clone()


class SGDA(Optimizer):
    """x <- proj_X(x - tau (g + A^T y)), y <- y + eta v: the ALM step with rho = mu = beta = 0, no safeguard."""

    name = "sgda"

    def _defaults(self, p, s, mu, rho):
        # the x-y coupling has gain tau eta ||A||^2 per iteration: below 1 with these, whatever ||A|| is
        lipschitz = p.smoothness + p.A_norm ** 2
        return {"tau": s / lipschitz, "eta": s / lipschitz}

    def step(self) -> None:
        plain = {**self.hyper, "rho": 0.0, "mu": 0.0, "beta": 0.0, "M_y": None}
        self._alm_iteration(self._gradient(self.x), plain)

    def output(self) -> Tensor:
        return self.x


class Penalty(Optimizer):
    """x <- proj_X(x - tau_t (g + rho_t A(zeta')^T v(x, zeta))), y stays 0; the multiplier estimate is rho_t v.
    tau_t = tau (1 + t)^-decay / (L + rho_t ||A||^2): `decay` > 0 adds a step decay on top of the curvature bound.
    `average` = a > 0 reports a weighted mean of x_1..x_t (kept in z), z_t = z_{t-1} + a / (t + a - 1) (x_t - z_{t-1}),
    weights growing like t^(a-1): a = 1 is the plain running mean, a > 1 forgets the start (polynomial-decay
    averaging, Shamir & Zhang 2013); a = 0 reports the last iterate."""

    name = "penalty"

    def _defaults(self, p, s, mu, rho):
        return {"rho": rho, "power": 0.25, "tau": s, "decay": 0.0, "average": 0.0}

    def penalty(self) -> float:
        return self.hyper["rho"] * (1 + self.t) ** self.hyper["power"]

    def step(self) -> None:
        p, rho_t = self.problem, self.penalty()
        tau_t = self.hyper["tau"] * (1 + self.t) ** -self.hyper["decay"] / (p.smoothness + rho_t * p.A_norm ** 2)
        grad_f = self._gradient(self.x)
        v = p.residual(self.x, self._zeta())
        (At_v,) = p.transpose_apply(self.x, self._zeta(), v)
        self.x = primal_step(self.x, self.x, grad_f, torch.zeros_like(self.x), At_v, tau=tau_t, rho=rho_t, mu=0.0,
                             project=p.project)
        self.t += 1
        a = self.hyper["average"]
        self.z = self.z + (self.x - self.z) * (a / (self.t + a - 1)) if a else self.x

    def output(self) -> Tensor:
        return self.z

    def multiplier(self) -> Tensor:
        return self.penalty() * self.problem.residual(self.x)


METHODS = {cls.name: cls for cls in (SSLALM, StormALM, ProxALM, Penalty, SGDA)}
