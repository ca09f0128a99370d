"""The server's side of a federated run: x_0 (and z_0) per method, rounds over a pool of agent shards, snapshots.

A *pool* is the set of shards a round talks to: `LocalPool` holds `AgentShard`s in this process, and
`raylab.federated.simulation.RayPool` holds Ray actors that wrap them; the server code is the same for both.
Snapshots concatenate the shards' per-agent state in agent order, so a checkpoint can be restored into any
sharding (a different number of actors after a resume, or a replacement actor after a crash).

    pool = LocalPool(problem, hyper, methods=("ssl_alm", "fedavg"), num_shards=2)
    server = Server(problem, hyper, pool.methods)
    for t in range(100):
        server.round(pool, t)
    metrics = server.evaluate(pool)
"""
from __future__ import annotations

import math

import numpy as np
import torch

from raylab.constrained.updates import primal_step, prox_center_step
from raylab.federated.agents import AgentShard
from raylab.federated.data import test_set
from raylab.federated.spec import Hyper, Problem

Tensor = torch.Tensor
STREAMS = {"fedavg": 1, "fedprox": 2}   # minibatch streams: the two baselines draw independent samples


class ShardLost(RuntimeError):
    """A shard's process died during a call; the run rolls back to its last snapshot."""


def shard_ranges(num_agents: int, num_shards: int) -> list[Tensor]:
    if num_shards < 1:
        raise ValueError(f"num_actors: need at least one shard (got {num_shards})")
    return [torch.as_tensor(part, dtype=torch.int64)
            for part in np.array_split(np.arange(num_agents), min(num_shards, num_agents))]


class Pool:
    """Calls a method on every shard and returns the answers in shard order."""

    methods: tuple[str, ...]
    sizes: list[int]

    def map(self, name: str, *args) -> list:
        raise NotImplementedError

    def map_each(self, name: str, args: list[tuple]) -> list:
        raise NotImplementedError

    def replace_lost(self) -> None:
        """Starts replacements for shards whose process died (in-process shards never die)."""

    def gather_state(self) -> dict:
        """Every agent's state, concatenated in agent order."""
        states = self.map("state_dict")
        return {k: torch.cat([s[k] for s in states]) if isinstance(states[0][k], Tensor) else states[0][k]
                for k in states[0]}

    def scatter_state(self, state: dict) -> None:
        parts = [{k: v[sum(self.sizes[:i]):sum(self.sizes[:i + 1])] if isinstance(v, Tensor) else v
                  for k, v in state.items()} for i in range(len(self.sizes))]
        self.map_each("load_state_dict", [(p,) for p in parts])


class LocalPool(Pool):
    """The single-process path: the same shards, called directly."""

    def __init__(self, problem: Problem, hyper: Hyper, methods: tuple[str, ...], num_shards: int = 1):
        self.methods = tuple(methods)
        self.shards = [AgentShard(problem, hyper, self.methods, part)
                       for part in shard_ranges(problem.num_agents, num_shards)]
        self.sizes = [len(s) for s in self.shards]

    def map(self, name: str, *args) -> list:
        return [getattr(shard, name)(*args) for shard in self.shards]

    def map_each(self, name: str, args: list[tuple]) -> list:
        return [getattr(shard, name)(*a) for shard, a in zip(self.shards, args)]


class Server:
    def __init__(self, problem: Problem, hyper: Hyper, methods: tuple[str, ...]):
        self.problem, self.hyper, self.methods = problem, hyper, tuple(methods)
        self.m = problem.num_agents
        x = problem.initial_point()
        self.x0 = {method: x.clone() for method in self.methods}
        self.z0 = x.clone()                        # SSL-ALM's prox centre of the server block
        self.test = test_set(problem.data, problem.torch_dtype)
        self.objective = problem.objective()
        self.last_round: dict[str, dict] = {}

    def round(self, pool: Pool, t: int) -> dict[str, dict]:
        """One round of every method; returns per method {participants, drift or dual_reset}."""
        self.last_round = {method: self._alm_round(pool, t) if method == "ssl_alm"
                           else self._fedavg_round(pool, t, method) for method in self.methods}
        return self.last_round

    def _alm_round(self, pool: Pool, t: int) -> dict:
        h, x0 = self.hyper, self.x0["ssl_alm"]
        y_norm = math.sqrt(sum(pool.map("alm_dual", t, x0)))
        # dual_step's safeguard, applied here because ||y|| sums over every shard
        reset = h.M_y is not None and y_norm >= h.M_y
        answers = pool.map("alm_primal", t, x0, reset)
        sum_y = sum(a[0] for a in answers)
        sum_v = sum(a[1] for a in answers)
        # x_0's column of A is -I in every constraint: (A^T y)_0 = -sum_i y_i, (A^T v)_0 = -sum_i v_i
        x0_new = primal_step(x0, self.z0, torch.zeros_like(x0), -sum_y, -sum_v, tau=h.server_tau(self.m),
                             rho=h.rho, mu=h.mu)
        self.z0 = prox_center_step(self.z0, x0 if h.z_update == "pre" else x0_new, h.beta)
        self.x0["ssl_alm"] = x0_new
        return {"participants": sum(a[2] for a in answers), "dual_reset": int(reset)}

    def _fedavg_round(self, pool: Pool, t: int, method: str) -> dict:
        prox_mu = self.hyper.prox_mu if method == "fedprox" else 0.0
        answers = pool.map("local_sgd", t, self.x0[method], prox_mu, STREAMS[method])
        count = sum(a[1] for a in answers)
        if count:                                  # nobody connected: the server model stays
            self.x0[method] = sum(a[0] for a in answers) / count
        return {"participants": count, "drift": max(a[2] for a in answers)}

    def evaluate(self, pool: Pool) -> dict[str, dict]:
        """Per method: mean objective (1/m) sum_i f_i(x_0), stationarity ||grad (1/m) sum_i f_i(x_0)||,
        consensus max_i ||x_i - x_0|| (SSL-ALM; the baselines' largest local drift), test accuracy."""
        out = {}
        for method in self.methods:
            answers = pool.map("evaluate", self.x0[method], method == "ssl_alm")
            row = {"objective": sum(a[0] for a in answers) / self.m,
                   "stationarity": float(torch.linalg.vector_norm(sum(a[1] for a in answers))) / self.m,
                   "consensus": (max(a[2] for a in answers) if method == "ssl_alm"
                                 else self.last_round.get(method, {}).get("drift", 0.0))}
            if self.test is not None:
                X, y = self.test
                row["accuracy"] = float((self.objective.predict(self.x0[method], X) == y).double().mean())
            out[method] = row
        return out

    def state_dict(self) -> dict:
        return {"x0": {k: v.clone() for k, v in self.x0.items()}, "z0": self.z0.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.x0 = {k: state["x0"][k].clone() for k in self.methods}
        self.z0 = state["z0"].clone()


def snapshot(server: Server, pool: Pool, t: int) -> dict:
    return {"round": t, "server": server.state_dict(), "agents": pool.gather_state()}


def restore(server: Server, pool: Pool, snap: dict) -> int:
    server.load_state_dict(snap["server"])
    pool.scatter_state(snap["agents"])
    return snap["round"]


def run_rounds(server: Server, pool: Pool, start: int, rounds: int, *, step, on_step, snap: dict,
               checkpoint_every: int = 0, on_checkpoint=None, on_rollback=None) -> dict:
    """Rounds start..rounds-1. `step(t)` runs round t (and its metrics); `on_step(t + 1, result)` records it.
    When a shard is lost mid-round the pool replaces it and every shard and the server roll back to `snap`,
    the last snapshot, and replay from there: draws are counter-based, so the replay is the same computation.
    Returns the final snapshot."""
    t = start
    while t < rounds:
        try:
            result = step(t)
        except ShardLost:
            pool.replace_lost()
            t = restore(server, pool, snap)
            if on_rollback:
                on_rollback(t)
            continue
        t += 1
        on_step(t, result)
        if t == rounds or (checkpoint_every and t % checkpoint_every == 0):
            snap = snapshot(server, pool, t)
            if on_checkpoint:
                on_checkpoint(snap)
    return snap
