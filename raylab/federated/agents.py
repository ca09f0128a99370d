"""A shard of virtual agents: their data, their connections, and every method's per-agent state, in torch.

One `AgentShard` computes for thousands to millions of agents at once (rows of (agents, d) tensors). The same
class runs in-process (`LocalPool`) and inside a Ray actor (`raylab.federated.actors`); it never imports Ray.
The math of each method is its agent half in `raylab.federated.methods`; `run(method, fn, ...)` calls it with
this shard and the method's state here. Draws are counter-based (`raylab.federated.rng`), so an agent's
connections and minibatches do not depend on which shard hosts it.
"""
from __future__ import annotations

import torch

from raylab.federated import rng
from raylab.federated.objectives import smoothness
from raylab.federated.spec import Problem

Tensor = torch.Tensor
LOCAL_STEPS_MAX = 1 << 16


class AgentShard:
    chunk = 256           # agents per gradient evaluation: gathered rows stay in cache (3x faster than 4096)

    def __init__(self, problem: Problem, agents: Tensor):
        self.problem = problem
        self.agents = torch.as_tensor(agents, dtype=torch.int64)
        self.everyone = torch.arange(len(self.agents))
        self.dtype = problem.torch_dtype
        self.f = problem.objective()
        self.data = problem.source.agent_data(self.agents, self.dtype)
        self.availability = problem.availability
        self.p = self.availability.probabilities(self.agents, problem.seed).to(self.dtype)
        self.on = self.availability.init_state(self.agents, problem.seed)
        self.avail_round, self.connected, self.pending = -1, None, None
        self.methods, self.state = {}, {}

    def __len__(self) -> int:
        return len(self.agents)

    def start(self, methods: list) -> None:
        """Takes the (resolved) method objects and makes each one's per-agent state."""
        self.methods = {m.name: m for m in methods}
        self.state = {m.name: m.agent_state(self) for m in methods}

    def run(self, method: str, fn: str, *args):
        """Calls the agent half `fn` of `method` on this shard and the method's state."""
        return getattr(self.methods[method], fn)(self, self.state[method], *args)

    def initial_rows(self) -> Tensor:
        return self.problem.initial_point().expand(len(self), -1).clone()

    # --- shared pieces -----------------------------------------------------------------------------------------
    def connected_in(self, t: int) -> Tensor:
        """Which agents reach the server in round t (computed once per round, shared by all methods)."""
        if t != self.avail_round:
            if t != self.avail_round + 1:
                raise RuntimeError(f"availability of round {t} asked after round {self.avail_round}")
            self.connected, self.on = self.availability.step(t, self.agents, self.on, self.problem.seed)
            self.avail_round = t
        return self.connected

    def samples(self, part: Tensor, t: int, stream: int, batch_size: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """(X, Y, w) for the agents `part`: every sample when batch_size is None, else a minibatch from the
        counter-based stream (t, stream); w weighs each row so that sum_j w_ij loss_ij estimates f_i."""
        counts = self.data.counts[part]
        if batch_size is None:
            X, Y, mask = self.data.gather(part)
            return X, Y, mask.to(self.dtype) / counts[:, None].to(self.dtype)
        idx = rng.integers(self.problem.seed, rng.MINIBATCH, t * LOCAL_STEPS_MAX + stream, self.agents[part],
                           batch_size, counts)
        X, Y, _ = self.data.gather(part, idx)
        return X, Y, torch.full(idx.shape, 1.0 / batch_size, dtype=self.dtype)

    def gradients(self, x: Tensor, local: Tensor, t: int, stream: int,
                  batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        """(f_i estimates, gradient estimates) at the rows x of the agents `local`, `chunk` agents at a time."""
        losses, grads = [], []
        for start in range(0, len(local), self.chunk):
            part = local[start:start + self.chunk]
            loss, grad = self.f.loss_grad(x[start:start + self.chunk], *self.samples(part, t, stream, batch_size))
            losses.append(loss)
            grads.append(grad)
        return torch.cat(losses), torch.cat(grads)

    def smoothness(self) -> float:
        """max_i L_i at the initial point, over this shard's agents (full local data)."""
        x, out = self.initial_rows(), 0.0
        for part in self.everyone.split(self.chunk):
            # start vectors from the agents' ids, so the estimate does not depend on the sharding
            start = rng.uniform(self.problem.seed, rng.POWER_ITERATION, 0, self.agents[part], x.shape[1]) - 0.5
            out = max(out, float(smoothness(self.f, x[part], *self.samples(part, 0, 0, None), start).max()))
        return out

    def min_p(self) -> float:
        return float(self.p.min())

    def normal_equations(self) -> tuple[Tensor, Tensor]:
        """Least squares: (sum_i A_i^T A_i / n_i, sum_i A_i^T b_i / n_i) over this shard, in float64."""
        X, Y, mask = self.data.gather(self.everyone)
        w = (mask / self.data.counts[:, None]).double()
        X, Y = X.double(), Y.double()
        return torch.einsum("anj,an,ank->jk", X, w, X), torch.einsum("anj,an,an->j", X, w, Y)

    # --- metrics and checkpoints -------------------------------------------------------------------------------------
    def evaluate(self, method: str, x0: Tensor) -> tuple[float, Tensor, float]:
        """(sum_i f_i(x0), sum_i grad f_i(x0), the method's consensus term), with every local sample."""
        loss, grad = self.gradients(x0.expand(len(self), -1), self.everyone, 0, 0, None)
        gap = self.methods[method].agent_consensus(self, self.state[method], x0)
        return float(loss.double().sum()), grad.double().sum(0), gap

    def bytes_per_agent(self) -> float:
        """Memory this shard holds per agent: the methods' state, p_i, the on/off state and the data."""
        held = [self.p, self.on] + [t for s in self.state.values() for t in s.values()]
        return (sum(t.nbytes for t in held) + self.data.nbytes()) / len(self)

    def state_dict(self) -> dict:
        return {"on": self.on, "avail_round": self.avail_round,
                "methods": {name: dict(s) for name, s in self.state.items()}}

    def save_state(self, path: str) -> int:
        """Writes this shard's state to `path` (on the node that hosts it); returns the bytes written."""
        import os

        tmp = f"{path}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return os.path.getsize(path)

    def load_state(self, path: str) -> None:
        self.load_state_dict(torch.load(path, weights_only=True))

    def load_state_dict(self, state: dict) -> None:
        self.on, self.avail_round, self.connected = state["on"].clone(), int(state["avail_round"]), None
        self.state = {name: {k: v.to(self.dtype).clone() for k, v in s.items()}
                      for name, s in state["methods"].items()}
        self.pending = None
