"""The federated methods, one class each: its hyper-parameters, its agent half and its server half.

    SslAlm     consensus SSL-ALM (DESIGN.md): per agent x_i, y_i, z_i; the server's x_0, z_0
    FedAvg     local SGD from the server model, the server moves by server_lr toward the (weighted) mean
    FedProx    FedAvg with the proximal pull prox_mu (x - x_0) in every local step
    Scaffold   FedAvg with control variates c_i, c that cancel client drift (Karimireddy et al., option II)

A method's agent half runs inside a shard (`raylab.federated.agents.AgentShard`), on the rows of all its agents
at once: `agent_state(shard)` makes the per-agent tensors, and the `agent_*` functions take (shard, state, ...).
The server half, `round(server, pool, t)`, calls those through `pool.call(name, "agent_...", ...)` and updates
the server's state. `METHODS` maps each name to its class; a new method is one class here, decorated with
`@register`. Hyper-parameters left as None are derived from the data's smoothness L (the largest curvature of
an f_i, `AgentShard.smoothness`) and the smallest connection probability p_min by `resolve(L, p_min, rounds)`.

SSL-ALM's residual estimate (`residual`, see docs/federated.md for why the default is `held`):
    held       every round every agent uses v_i = x_i - x_0^(i), x_0^(i) the last server model it received;
               the server uses each agent's last reported x_i and y_i. No 1/p weights, so the dual gain per
               round is eta whatever the connection pattern (bursty Markov availability included).
    unbiased   v_i = (c_i / p_i)(x_i - x_0), the one-sample oracle of the theory (unbiased when connections
               are independent across rounds); `fresh_rho_draw` draws a second, independent c_i' for rho's term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import ConfigDict, Field

from raylab.constrained.updates import dual_step, primal_step, prox_center_step
from raylab.federated import rng

Tensor = torch.Tensor
METHODS: dict[str, type["Method"]] = {}
Positive = Annotated[float, Field(gt=0)]


def register(cls):
    METHODS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class AlmHyper:
    """SSL-ALM's step sizes; None: derived from L and p_min (see `resolve`)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    eta: Positive | None = None          # dual step
    tau: Positive | None = None          # primal step
    beta: Annotated[float, Field(gt=0, le=1)] = 0.5
    rho: Annotated[float, Field(ge=0)] | None = None
    mu: Annotated[float, Field(ge=0)] | None = None
    M_y: Positive | None = 1e4           # dual safeguard radius; None: none
    z_update: Literal["pre", "post"] = "pre"
    server_lr_scale: Positive | None = None   # server step = scale * tau; None: 1 / m
    residual: Literal["held", "unbiased"] = "held"
    fresh_rho_draw: bool = False         # unbiased: an independent connection draw for the rho term
    schedule: Literal["constant", "theory"] = "constant"   # theory: eta, tau, beta times 1/sqrt(rounds)

    def __post_init__(self):
        if self.fresh_rho_draw and self.residual != "unbiased":
            raise ValueError("fresh_rho_draw: needs residual: unbiased (the held residual draws nothing)")

    def resolve(self, L: float | None, p_min: float | None, rounds: int) -> "AlmHyper":
        """Concrete steps. held: rho = 0.3 L, mu = 0.15 L, tau = 0.5 / L, eta = min(0.3 p_min, 0.1) L
        (a connected agent's anchor is on average 1/p rounds old). unbiased: a connected agent sees rho / p,
        so tau = 0.5 / (L + rho / p_min + mu) and eta = 0.05 p_min L. Scale-free: f -> s f scales L, rho, mu,
        eta by s and tau by 1/s. schedule theory multiplies eta, tau and beta by 1/sqrt(rounds)."""
        if not self.needs_smoothness():
            rho, mu, tau, eta = self.rho, self.mu, self.tau, self.eta
        else:
            rho = 0.3 * L if self.rho is None else self.rho
            mu = 0.15 * L if self.mu is None else self.mu
            if self.residual == "held":
                tau, eta = 0.5 / L, min(0.3 * p_min, 0.1) * L
            else:
                tau, eta = 0.5 / (L + rho / p_min + mu), 0.05 * p_min * L
            tau, eta = self.tau or tau, self.eta or eta
        beta = self.beta
        if self.schedule == "theory":
            tau, eta, beta = (s / math.sqrt(rounds) for s in (tau, eta, beta))
        return replace(self, eta=eta, tau=tau, beta=beta, rho=rho, mu=mu)

    def needs_smoothness(self) -> bool:
        return None in (self.eta, self.tau, self.rho, self.mu)

    def server_tau(self, num_agents: int) -> float:
        return self.tau * (1.0 / num_agents if self.server_lr_scale is None else self.server_lr_scale)


@dataclass(frozen=True)
class LocalHyper:
    """Local-SGD methods (FedAvg, FedProx, SCAFFOLD); local_lr None: 0.5 / L."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    local_steps: Annotated[int, Field(ge=1, le=1000)] = 5
    local_lr: Positive | None = None
    prox_mu: Annotated[float, Field(ge=0)] = 0.1      # FedProx's proximal weight
    server_lr: Positive = 1.0            # the server moves server_lr of the way to the clients' mean
    weighting: Literal["uniform", "samples"] = "uniform"   # uniform: the objective sum_i f_i; samples: n_i

    def needs_smoothness(self) -> bool:
        return self.local_lr is None

    def resolve(self, L: float | None, p_min: float | None, rounds: int) -> "LocalHyper":
        return self if self.local_lr is not None else replace(self, local_lr=0.5 / L)


class Method:
    """One federated method. Subclasses set name, label, hyper_type and the halves below."""

    name: ClassVar[str]
    label: ClassVar[str]
    hyper_type: ClassVar[type]
    stream: ClassVar[int]                # its own minibatch stream, so methods draw independent samples

    def __init__(self, hyper, batch_size: int | None):
        self.hyper, self.batch_size = hyper, batch_size

    def resolved(self, L: float | None, p_min: float | None, rounds: int) -> "Method":
        return type(self)(self.hyper.resolve(L, p_min, rounds), self.batch_size)

    def agent_state(self, shard) -> dict[str, Tensor]:
        return {}

    def server_state(self, x0: Tensor) -> dict[str, Tensor]:
        return {"x0": x0.clone()}

    def round(self, server, pool, t: int) -> dict:
        raise NotImplementedError

    def agent_consensus(self, shard, state: dict, x0: Tensor) -> float | None:
        """max_i ||x_i - x_0|| for methods that keep local models; None: the server reports the round's drift."""
        return None

    def vectors_per_agent(self) -> int:
        """How many d-vectors per agent the agent half keeps (for memory estimates)."""
        return 0


@register
class SslAlm(Method):
    name, label, hyper_type, stream = "ssl_alm", "SSL-ALM", AlmHyper, 0

    def agent_state(self, shard) -> dict[str, Tensor]:
        x = shard.initial_rows()
        state = {"x": x, "y": torch.zeros_like(x), "z": x.clone()}
        if self.hyper.residual == "held":
            state |= {"anchor": x.clone(), "x_sent": x.clone(), "y_sent": torch.zeros_like(x)}
        return state

    def server_state(self, x0: Tensor) -> dict[str, Tensor]:
        return {"x0": x0.clone(), "z0": x0.clone()}

    def vectors_per_agent(self) -> int:
        return 6 if self.hyper.residual == "held" else 3

    def agent_dual(self, shard, state: dict, t: int, x0: Tensor) -> float:
        """The dual step without the safeguard; returns this shard's part of ||y||^2."""
        c = shard.connected_in(t)
        if self.hyper.residual == "held":
            state["anchor"][c] = x0
            v = state["x"] - state["anchor"]
            v_rho = v
        else:
            v = (c.to(shard.dtype) / shard.p)[:, None] * (state["x"] - x0)
            v_rho = v
            if self.hyper.fresh_rho_draw:
                c2 = rng.uniform(shard.problem.seed, rng.RHO_DRAW, t, shard.agents)[:, 0] < shard.p
                v_rho = (c2.to(shard.dtype) / shard.p)[:, None] * (state["x"] - x0)
        y, _ = dual_step(state["y"], v, self.hyper.eta, None)
        shard.pending = (y, v_rho, c)
        return float(y.double().pow(2).sum())

    def agent_primal(self, shard, state: dict, t: int, reset: bool) -> tuple[Tensor, Tensor, int]:
        """Primal and prox-centre steps; returns what the server's step needs: (sum_i y_i, sum_i v_i) for the
        unbiased residual, (sum of the last reported y_i, of the last reported x_i) for the held one."""
        y, v, c = shard.pending
        h, x = self.hyper, state["x"]
        if reset:
            y = torch.zeros_like(y)
        _, g = shard.gradients(x, shard.everyone, t, self.stream, self.batch_size)
        x_new = primal_step(x, state["z"], g, y, v, tau=h.tau, rho=h.rho, mu=h.mu)
        state["z"] = prox_center_step(state["z"], x if h.z_update == "pre" else x_new, h.beta)
        state["y"], shard.pending = y, None
        if h.residual == "held":
            if reset:                  # the server decided the reset, so it knows every reported dual is 0
                state["y_sent"].zero_()
            state["x_sent"][c], state["y_sent"][c] = x[c], y[c]
            state["x"] = x_new
            return state["y_sent"].sum(0), state["x_sent"].sum(0), int(c.sum())
        state["x"] = x_new
        return y.sum(0), v.sum(0), int(c.sum())

    def round(self, server, pool, t: int) -> dict:
        h, s, m = self.hyper, server.state[self.name], server.m
        x0 = s["x0"]
        y_norm = math.sqrt(sum(pool.call(self.name, "agent_dual", t, x0)))
        reset = h.M_y is not None and y_norm >= h.M_y   # the safeguard: ||y|| sums over every shard
        answers = pool.call(self.name, "agent_primal", t, reset)
        sum_y, sum_second = sum(a[0] for a in answers), sum(a[1] for a in answers)
        # x_0's column of A is -I in every constraint: (A^T y)_0 = -sum_i y_i, (A^T v)_0 = -sum_i v_i
        sum_v = sum_second - m * x0 if h.residual == "held" else sum_second
        x0_new = primal_step(x0, s["z0"], torch.zeros_like(x0), -sum_y, -sum_v, tau=h.server_tau(m), rho=h.rho,
                             mu=h.mu)
        s["z0"] = prox_center_step(s["z0"], x0 if h.z_update == "pre" else x0_new, h.beta)
        s["x0"] = x0_new
        return {"participants": sum(a[2] for a in answers), "dual_reset": int(reset)}

    def agent_consensus(self, shard, state: dict, x0: Tensor) -> float:
        return float(torch.linalg.vector_norm(state["x"] - x0, dim=1).max())


class LocalSgd(Method):
    """The shared skeleton of FedAvg, FedProx and SCAFFOLD: local steps on the connected agents from x_0, then
    x_0 <- x_0 + server_lr * sum_i w_i (x_i - x_0) / sum_i w_i over them (w_i = 1, or n_i for `samples`)."""

    hyper_type = LocalHyper
    prox_mu: float = 0.0

    def correction(self, state: dict, part: Tensor, c: Tensor | None) -> Tensor | float:
        return 0.0

    def agent_local(self, shard, state: dict, t: int, x0: Tensor, c: Tensor | None = None):
        """local_steps steps on every connected agent; returns (sum_i w_i (x_i - x_0), sum_i w_i, how many,
        largest ||x_i - x_0||, sum of control-variate changes or None)."""
        h = self.hyper
        local = shard.connected_in(t).nonzero()[:, 0]
        total, weight, drift, dc = torch.zeros_like(x0), 0.0, 0.0, None
        for part in local.split(shard.chunk) if len(local) else ():
            x = x0.expand(len(part), -1).clone()
            correction = self.correction(state, part, c)
            for k in range(h.local_steps):
                _, g = shard.gradients(x, part, t, self.stream * 1024 + k + 1, self.batch_size)
                x = x - h.local_lr * (g + correction + self.prox_mu * (x - x0))
            w = shard.data.counts[part].to(x.dtype) if h.weighting == "samples" else torch.ones(len(part),
                                                                                                  dtype=x.dtype)
            total += (w[:, None] * (x - x0)).sum(0)
            weight += float(w.sum())
            drift = max(drift, float(torch.linalg.vector_norm(x - x0, dim=1).max()))
            dc = self.update_controls(state, part, c, x0, x, dc)
        return total, weight, len(local), drift, dc

    def update_controls(self, state, part, c, x0, x, dc):
        return None

    def round(self, server, pool, t: int) -> dict:
        s = server.state[self.name]
        answers = pool.call(self.name, "agent_local", t, s["x0"], *self.round_args(s))
        weight = sum(a[1] for a in answers)
        if weight:                                   # nobody connected: the server model stays
            s["x0"] = s["x0"] + self.hyper.server_lr * sum(a[0] for a in answers) / weight
            self.server_update(server, s, answers)
        return {"participants": sum(a[2] for a in answers), "drift": max(a[3] for a in answers)}

    def round_args(self, s: dict) -> tuple:
        return ()

    def server_update(self, server, s: dict, answers: list) -> None:
        pass


@register
class FedAvg(LocalSgd):
    name, label, stream = "fedavg", "FedAvg", 1


@register
class FedProx(LocalSgd):
    name, label, stream = "fedprox", "FedProx", 2

    @property
    def prox_mu(self) -> float:
        return self.hyper.prox_mu


@register
class Scaffold(LocalSgd):
    """Local steps on g_i - c_i + c; afterwards c_i+ = c_i - c + (x_0 - x_i) / (K lr), and the server adds
    (1/m) sum over the connected of (c_i+ - c_i) to c (m: all agents)."""

    name, label, stream = "scaffold", "SCAFFOLD", 3

    def agent_state(self, shard) -> dict[str, Tensor]:
        return {"c": torch.zeros_like(shard.initial_rows())}

    def server_state(self, x0: Tensor) -> dict[str, Tensor]:
        return {"x0": x0.clone(), "c": torch.zeros_like(x0)}

    def vectors_per_agent(self) -> int:
        return 1

    def correction(self, state: dict, part: Tensor, c: Tensor | None) -> Tensor:
        return c - state["c"][part]

    def update_controls(self, state, part, c, x0, x, dc):
        new = state["c"][part] - c + (x0 - x) / (self.hyper.local_steps * self.hyper.local_lr)
        change = (new - state["c"][part]).sum(0)
        state["c"][part] = new
        return change if dc is None else dc + change

    def round_args(self, s: dict) -> tuple:
        return (s["c"],)

    def server_update(self, server, s: dict, answers: list) -> None:
        s["c"] = s["c"] + sum(a[4] for a in answers if a[4] is not None) / server.m
