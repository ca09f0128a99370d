"""The server side: every method's server state, rounds over a pool of agent shards, evaluation, snapshots.

A *pool* is a list of `AgentShard`s, in this process (`LocalPool`) or in Ray actors (`raylab.federated.actors.
RayPool`); the server code is the same for both. Each method's round is its server half
(`raylab.federated.methods`), which calls its agent half on every shard through `pool.call`. Snapshots
concatenate the shards' per-agent state in agent order, so a checkpoint restores into any sharding (a different
number of actors after a resume, or a replacement actor after a crash).

    pool = LocalPool(problem, num_shards=2)
    server = Server.start(problem, [SslAlm(AlmHyper(), None), FedAvg(LocalHyper(), None)], pool, rounds=100)
    for t in range(100):
        server.round(pool, t)
    metrics = server.evaluate(pool)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raylab.federated.agents import AgentShard
from raylab.federated.spec import Problem

Tensor = torch.Tensor


class ShardLost(RuntimeError):
    """A shard's process died during a call; the run rolls back to its last snapshot."""


def shard_ranges(num_agents: int, num_shards: int) -> list[Tensor]:
    if num_shards < 1:
        raise ValueError(f"num_actors: need at least one shard (got {num_shards})")
    return [torch.as_tensor(part, dtype=torch.int64)
            for part in np.array_split(np.arange(num_agents), min(num_shards, num_agents))]


def _concat(states: list):
    first = states[0]
    if isinstance(first, dict):
        return {k: _concat([s[k] for s in states]) for k in first}
    return torch.cat(states) if isinstance(first, Tensor) else first


def _slice(state, lo: int, hi: int):
    if isinstance(state, dict):
        return {k: _slice(v, lo, hi) for k, v in state.items()}
    return state[lo:hi] if isinstance(state, Tensor) else state


class Pool:
    """Calls a function on every shard and returns the answers in shard order."""

    sizes: list[int]

    def map(self, name: str, *args) -> list:
        raise NotImplementedError

    def map_each(self, name: str, args: list[tuple]) -> list:
        raise NotImplementedError

    def call(self, method: str, fn: str, *args) -> list:
        """The agent half `fn` of `method` on every shard."""
        return self.map("run", method, fn, *args)

    def start(self, methods: list) -> None:
        self.methods = list(methods)
        self.map("start", self.methods)

    def replace_lost(self) -> None:
        """Starts replacements for shards whose process died (in-process shards never die)."""

    def gather_state(self) -> dict:
        """Every agent's state, concatenated in agent order."""
        return _concat(self.map("state_dict"))

    def scatter_state(self, state: dict) -> None:
        bounds = np.cumsum([0] + self.sizes)
        self.map_each("load_state_dict", [(_slice(state, int(lo), int(hi)),) for lo, hi in zip(bounds, bounds[1:])])

    def shutdown(self) -> None:
        """Stops what the pool started (nothing for in-process shards)."""


class LocalPool(Pool):
    """The single-process path: the same shards, called directly."""

    def __init__(self, problem: Problem, num_shards: int = 1):
        self.shards = [AgentShard(problem, part) for part in shard_ranges(problem.num_agents, num_shards)]
        self.sizes = [len(s) for s in self.shards]

    def map(self, name: str, *args) -> list:
        return [getattr(shard, name)(*args) for shard in self.shards]

    def map_each(self, name: str, args: list[tuple]) -> list:
        return [getattr(shard, name)(*a) for shard, a in zip(self.shards, args)]


class Server:
    def __init__(self, problem: Problem, methods: list):
        self.problem, self.methods = problem, {m.name: m for m in methods}
        self.m = problem.num_agents
        x = problem.initial_point()
        self.state = {name: m.server_state(x) for name, m in self.methods.items()}
        source = problem.source
        self.test = source.test_set(problem.torch_dtype)
        self.objective = problem.objective()
        self.solution = None
        self.last_round: dict[str, dict] = {}

    @classmethod
    def start(cls, problem: Problem, methods: list, pool: Pool, rounds: int) -> "Server":
        """Resolves the methods' default step sizes from the data's smoothness L (max over every agent, from the
        shards) and the smallest p_i, hands the methods to the shards and returns the server."""
        L = p_min = None
        if any(m.hyper.needs_smoothness() for m in methods):
            L = max(pool.map("smoothness"))
            p_min = min(pool.map("min_p"))
            if not np.isfinite(L) or L <= 0:
                raise ValueError(f"data: the local objectives' curvature L = {L} gives no default step sizes; "
                                 "set the steps explicitly")
        resolved = [m.resolved(L, p_min, rounds) for m in methods]       # L, p_min: None when no default is asked
        pool.start(resolved)
        server = cls(problem, resolved)
        server.smoothness = L
        if problem.model.name == "least_squares":
            gram, rhs = (sum(parts) for parts in zip(*pool.map("normal_equations")))
            server.solution = torch.linalg.solve(gram, rhs)
        return server

    def x0(self, method: str) -> Tensor:
        return self.state[method]["x0"]

    def round(self, pool: Pool, t: int) -> dict[str, dict]:
        """One round of every method; returns per method {participants, drift or dual_reset}."""
        self.last_round = {name: m.round(self, pool, t) for name, m in self.methods.items()}
        return self.last_round

    def evaluate(self, pool: Pool) -> dict[str, dict]:
        """Per method: mean objective (1/m) sum_i f_i(x_0), stationarity ||grad (1/m) sum_i f_i(x_0)||,
        consensus max_i ||x_i - x_0|| (SSL-ALM; the baselines' largest local drift), ||x_0|| (the iterate
        norm), distance ||x_0 - x*|| where x* is known (least squares), test accuracy where there is a test set."""
        out = {}
        for name in self.methods:
            x0 = self.x0(name)
            answers = pool.map("evaluate", name, x0)
            gaps = [a[2] for a in answers if a[2] is not None]
            row = {"objective": sum(a[0] for a in answers) / self.m,
                   "stationarity": float(torch.linalg.vector_norm(sum(a[1] for a in answers))) / self.m,
                   "consensus": max(gaps) if gaps else self.last_round.get(name, {}).get("drift", 0.0),
                   "norm": float(torch.linalg.vector_norm(x0.double()))}
            if self.solution is not None:
                row["distance"] = float(torch.linalg.vector_norm(x0.double() - self.solution))
            if self.test is not None:
                X, y = self.test
                row["accuracy"] = float((self.objective.predict(x0, X) == y).double().mean())
            out[name] = row
        return out

    def state_dict(self) -> dict:
        return {name: {k: v.clone() for k, v in s.items()} for name, s in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.state = {name: {k: v.clone() for k, v in state[name].items()} for name in self.methods}


def snapshot(server: Server, pool: Pool, t: int, shard_dir: Path | None = None) -> dict:
    """The server's state and every agent's: gathered through this process, or, with `shard_dir`, written by
    each shard to `shard_dir/round-<t>-shard-<k>.pt` itself (only the file names travel; on several nodes
    `shard_dir` must be on a file system they share). Files of all but the two newest rounds are removed."""
    if shard_dir is None:
        return {"round": t, "server": server.state_dict(), "agents": pool.gather_state()}
    shard_dir.mkdir(parents=True, exist_ok=True)
    names = [f"round-{t:09d}-shard-{k:04d}.pt" for k in range(len(pool.sizes))]
    pool.map_each("save_state", [(str(shard_dir / n),) for n in names])
    rounds = sorted({p.name.split("-shard-")[0] for p in shard_dir.glob("round-*-shard-*.pt")})
    for old in rounds[:-2]:
        for path in shard_dir.glob(f"{old}-shard-*.pt"):
            path.unlink()
    return {"round": t, "server": server.state_dict(),
            "agents": {"shard_dir": str(shard_dir), "files": names, "sizes": list(pool.sizes)}}


def restore(server: Server, pool: Pool, snap: dict) -> int:
    """Back to a snapshot; shard files load in the shards when the sharding is the same, else through here."""
    server.load_state_dict(snap["server"])
    agents = snap["agents"]
    if "files" not in agents:
        pool.scatter_state(agents)
    else:
        paths = [str(Path(agents["shard_dir"]) / n) for n in agents["files"]]
        if list(agents["sizes"]) == list(pool.sizes):
            pool.map_each("load_state", [(p,) for p in paths])
        else:
            pool.scatter_state(_concat([torch.load(p, weights_only=True) for p in paths]))
    return int(snap["round"])


def round_row(server: Server, pool: Pool, info: dict[str, dict]) -> dict:
    """One metrics row: per method its evaluation and the round's participants, keys `<method>_<metric>`."""
    row = {f"{m}_participants": info[m]["participants"] for m in server.methods}
    for method, metrics in server.evaluate(pool).items():
        row |= {f"{method}_{k}": v for k, v in metrics.items()}
    return row


def run_rounds(server: Server, pool: Pool, start: int, rounds: int, *, eval_every: int, on_row, snap: dict,
               checkpoint_due=lambda done: False, on_checkpoint=None, on_rollback=None, before_round=None,
               shard_dir: Path | None = None) -> dict:
    """Rounds start..rounds-1; every `eval_every` rounds (and at the end) `on_row(done, row)`; after round
    `done` with `checkpoint_due(done)` (and at the end) a snapshot, handed to `on_checkpoint(done, snap)`.
    When a shard is lost mid-round the pool replaces it and every shard and the server roll back to `snap`,
    the last snapshot, and replay from there: draws are counter-based, so the replay is the same computation,
    and rows and checkpoints already made are not made again. `shard_dir`: shards write their own state
    (see `snapshot`). Returns the final snapshot."""
    t = done_rows = saved = start
    while t < rounds:
        try:
            if before_round is not None:
                before_round(t)
            info = server.round(pool, t)
            due_row = (t + 1) % eval_every == 0 or t + 1 == rounds
            row = round_row(server, pool, info) if due_row and t + 1 > done_rows else None
        except ShardLost:
            pool.replace_lost()
            t = restore(server, pool, snap)
            if on_rollback is not None:
                on_rollback(t)
            continue
        t += 1
        if row is not None:
            done_rows = t
            on_row(t, row)
        if t == rounds or checkpoint_due(t):
            snap = snapshot(server, pool, t, shard_dir)
            if on_checkpoint is not None and t > saved:
                saved = t
                on_checkpoint(t, snap)
    return snap
