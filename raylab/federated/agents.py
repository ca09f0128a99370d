"""A shard of virtual agents: their data, their SSL-ALM blocks (x_i, y_i, z_i) and their local steps, in torch.

One `AgentShard` computes for thousands to millions of agents at once (rows of (agents, d) tensors). The same
class runs in-process (`LocalPool`) and inside a Ray actor (`raylab.federated.actors`); it never imports Ray.

SSL-ALM on the consensus problem  min sum_i f_i(x_i)  s.t.  x_i - x_0 = 0  (A x - b stacks the residuals),
one round t, with c_i = 1 when agent i reaches the server (probability p_i):

    v_i = (c_i / p_i) (x_i - x_0)                      unbiased for x_i - x_0; 0 x_i - 0 x_0 when disconnected
    y_i <- y_i + eta v_i, all y <- 0 if ||y|| >= M_y   dual_step; the norm is global, so the server decides
    x_i <- x_i - tau (g_i + y_i + rho v_i + mu (x_i - z_i))          primal_step, g_i a minibatch gradient of f_i
    z_i <- z_i + beta (x_i,t - z_i)                                   prox_center_step

The rho term uses the same connection draw as the dual step: A is known exactly here (only whether x_i can be
seen is random), so A^T v is already unbiased for A^T (A x - b) and a second draw within one round would have no
physical meaning. The server's own block (x_0, z_0) is updated by `raylab.federated.server`.
"""
from __future__ import annotations

import torch

from raylab.constrained.updates import dual_step, primal_step, prox_center_step
from raylab.federated import rng
from raylab.federated.data import agent_data
from raylab.federated.spec import METHODS, Hyper, Problem

Tensor = torch.Tensor
CHUNK = 4096          # agents per gradient evaluation: bounds the memory of gathered data
LOCAL_STEPS_MAX = 1 << 16


class AgentShard:
    def __init__(self, problem: Problem, hyper: Hyper, methods: tuple[str, ...], agents: Tensor):
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; expected some of {list(METHODS)}")
        self.problem, self.hyper, self.methods = problem, hyper, tuple(methods)
        self.agents = torch.as_tensor(agents, dtype=torch.int64)
        self.dtype = problem.torch_dtype
        self.f = problem.objective()
        self.data = agent_data(problem.data, self.agents, self.dtype)
        self.availability = problem.availability
        self.p = self.availability.probabilities(self.agents).to(self.dtype)
        self.on = self.availability.init_state(self.agents)
        self.avail_round, self.connected = -1, None
        if "ssl_alm" in self.methods:
            x = problem.initial_point().expand(len(self.agents), -1).clone()
            self.x, self.y, self.z = x, torch.zeros_like(x), x.clone()
        self._pending = None

    def __len__(self) -> int:
        return len(self.agents)

    # --- shared pieces -----------------------------------------------------------------------------------------
    def connected_in(self, t: int) -> Tensor:
        """Which agents reach the server in round t (computed once per round, shared by all methods)."""
        if t != self.avail_round:
            if t != self.avail_round + 1:
                raise RuntimeError(f"availability of round {t} asked after round {self.avail_round}")
            self.connected, self.on = self.availability.step(t, self.agents, self.on)
            self.avail_round = t
        return self.connected

    def samples(self, part: Tensor, t: int, stream: int, exact: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(X, Y, w) for the agents `part`: a minibatch drawn from the counter-based stream (t, stream), or every
        sample when batch_size is None or `exact`; w weighs each row so that sum_j w_ij loss_ij estimates f_i."""
        b, mean = (None if exact else self.hyper.batch_size), self.f.reduction == "mean"
        counts = self.data.counts[part]
        if b is None:
            X, Y, mask = self.data.gather(part)
            w = mask / counts[:, None] if mean else mask.to(torch.float64)
        else:
            idx = rng.integers(self.problem.seed, rng.MINIBATCH, t * LOCAL_STEPS_MAX + stream, self.agents[part], b,
                               counts)
            X, Y, _ = self.data.gather(part, idx)
            w = (torch.ones(len(part), 1) if mean else counts[:, None].to(torch.float64)).expand(-1, b) / b
        return X, Y, w.to(self.dtype)

    def gradients(self, x: Tensor, local: Tensor, t: int, stream: int, exact: bool = False) -> tuple[Tensor, Tensor]:
        """(f_i estimates, gradient estimates) at the rows x of the agents `local`, CHUNK agents at a time."""
        losses, grads = [], []
        for start in range(0, len(local), CHUNK):
            loss, grad = self.f.loss_grad(x[start:start + CHUNK], *self.samples(local[start:start + CHUNK], t,
                                                                                 stream, exact))
            losses.append(loss)
            grads.append(grad)
        return torch.cat(losses), torch.cat(grads)

    # --- SSL-ALM, in two calls per round (the safeguard needs the global ||y|| in between) ------------------------
    def alm_dual(self, t: int, x0: Tensor) -> float:
        """Dual step without the safeguard; returns this shard's part of ||y||^2."""
        c = self.connected_in(t)
        v = (c.to(self.dtype) / self.p)[:, None] * (self.x - x0)
        y, _ = dual_step(self.y, v, self.hyper.eta, None)
        self._pending = (y, v, int(c.sum()))
        return float(y.double().pow(2).sum())

    def alm_primal(self, t: int, x0: Tensor, reset: bool) -> tuple[Tensor, Tensor, int]:
        """Primal and prox-centre steps; returns (sum_i y_i, sum_i v_i, connected agents) for the server's step."""
        y, v, n_connected = self._pending
        if reset:
            y = torch.zeros_like(y)
        h = self.hyper
        _, g = self.gradients(self.x, torch.arange(len(self)), t, 0)
        x_new = primal_step(self.x, self.z, g, y, v, tau=h.tau, rho=h.rho, mu=h.mu)
        self.z = prox_center_step(self.z, self.x if h.z_update == "pre" else x_new, h.beta)
        self.x, self.y, self._pending = x_new, y, None
        return y.sum(0), v.sum(0), n_connected

    # --- FedAvg / FedProx ------------------------------------------------------------------------------------------
    def local_sgd(self, t: int, x0: Tensor, prox_mu: float, stream: int) -> tuple[Tensor, int, float]:
        """local_steps SGD steps from x0 on each connected agent (with FedProx's pull prox_mu (x - x0));
        returns (sum of the local models, how many, the largest ||x_i - x0||)."""
        local = self.connected_in(t).nonzero()[:, 0]
        if len(local) == 0:
            return torch.zeros_like(x0), 0, 0.0
        total, drift = torch.zeros_like(x0), 0.0
        for start in range(0, len(local), CHUNK):
            part = local[start:start + CHUNK]
            x = x0.expand(len(part), -1).clone()
            batch = self.samples(part, t, 0) if self.hyper.batch_size is None else None  # the same rows each step
            for k in range(self.hyper.local_steps):
                _, g = self.f.loss_grad(x, *(batch or self.samples(part, t, stream * 1024 + k + 1)))
                x = x - self.hyper.local_lr * (g + prox_mu * (x - x0))
            total += x.sum(0)
            drift = max(drift, float(torch.linalg.vector_norm(x - x0, dim=1).max()))
        return total, len(local), drift

    # --- metrics and checkpoints -------------------------------------------------------------------------------------
    def evaluate(self, x0: Tensor, with_consensus: bool) -> tuple[float, Tensor, float]:
        """(sum_i f_i(x0), sum_i grad f_i(x0), max_i ||x_i - x0|| or 0), with every local sample."""
        loss, grad = self.gradients(x0.expand(len(self), -1), torch.arange(len(self)), 0, 0, exact=True)
        gap = float(torch.linalg.vector_norm(self.x - x0, dim=1).max()) if with_consensus else 0.0
        return float(loss.double().sum()), grad.double().sum(0), gap

    def bytes_per_agent(self) -> float:
        """Memory this shard holds per agent: its state and (for stored datasets) its data."""
        held = [self.p, self.on] + ([self.x, self.y, self.z] if "ssl_alm" in self.methods else [])
        held += [t for t in (getattr(self.data, k, None) for k in ("X", "Y", "mask", "counts")) if t is not None]
        return sum(t.nbytes for t in held) / len(self)

    def state_dict(self) -> dict:
        state = {"on": self.on, "avail_round": self.avail_round}
        if "ssl_alm" in self.methods:
            state |= {"x": self.x, "y": self.y, "z": self.z}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.on, self.avail_round, self.connected = state["on"].clone(), int(state["avail_round"]), None
        if "ssl_alm" in self.methods:
            self.x, self.y, self.z = (state[k].to(self.dtype).clone() for k in ("x", "y", "z"))
        self._pending = None
