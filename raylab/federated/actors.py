"""All of the federated part's Ray wiring: shard actors and the actor-sharded pool, dead actors replaced.

`RayPool` has the interface of `raylab.federated.server.LocalPool`, so `Server` drives it with the same code.
`ray.remote` is applied where an actor is built, with the CPUs the config gives it, and the actors are spread
over the cluster's nodes (SPREAD); each limits torch to `threads` threads so actors placed one per CPU do not
oversubscribe a machine. When an actor dies during a round (a crash, an OOM kill, `ray.kill`), `map` raises
`ShardLost`; the run loop then calls `replace_lost`, which starts a fresh actor for each dead one (handing it the
methods again), and restores every shard and the server from the last snapshot, so the run ends where an
uninterrupted run would.

    pool = RayPool(problem, num_actors=2, cpus_per_actor=1)
"""
from __future__ import annotations

import resource

import ray
import torch
from ray.exceptions import RayActorError

from raylab.federated.agents import AgentShard
from raylab.federated.server import Pool, ShardLost, shard_ranges
from raylab.federated.spec import Problem


class ShardActor:
    def __init__(self, problem: Problem, agents, threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.shard = AgentShard(problem, agents)

    def call(self, name: str, *args):
        return getattr(self.shard, name)(*args)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def peak_memory(self) -> int:
        """This process's peak resident memory in bytes (Linux reports ru_maxrss in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def default_num_actors() -> int:
    """One actor per CPU of the Ray cluster."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class RayPool(Pool):
    def __init__(self, problem: Problem, num_actors: int | None = None, cpus_per_actor: float = 1.0,
                 threads: int = 1):
        remote = ray.remote(num_cpus=cpus_per_actor, max_restarts=0, scheduling_strategy="SPREAD")(ShardActor)
        problem_ref = ray.put(problem)
        self._build = lambda agents: remote.remote(problem_ref, agents, threads)
        self.parts = shard_ranges(problem.num_agents, num_actors or default_num_actors())
        self.sizes = [len(p) for p in self.parts]
        self.actors = [self._build(part) for part in self.parts]
        self.lost: set[int] = set()
        self.restarts = 0
        self.methods = []
        self._get([a.peak_memory.remote() for a in self.actors])      # wait until every actor is up

    def map(self, name: str, *args) -> list:
        args = tuple(ray.put(a) if _is_large(a) else a for a in args)
        return self._get([actor.call.remote(name, *args) for actor in self.actors])

    def map_each(self, name: str, args: list[tuple]) -> list:
        return self._get([actor.call.remote(name, *a) for actor, a in zip(self.actors, args)])

    def _get(self, refs: list) -> list:
        answers = []
        for k, ref in enumerate(refs):
            try:
                answers.append(ray.get(ref))
            except RayActorError:
                self.lost.add(k)
        if self.lost:
            raise ShardLost(f"agent actors {sorted(self.lost)} died")
        return answers

    def replace_lost(self) -> None:
        for k in sorted(self.lost):
            ray.kill(self.actors[k])
            self.actors[k] = self._build(self.parts[k])
            ray.get(self.actors[k].call.remote("start", self.methods))
            self.restarts += 1
        self.lost.clear()

    def kill(self, k: int) -> None:
        """Fault injection: kill actor k the way a crash would (no graceful exit, no automatic restart)."""
        ray.kill(self.actors[k], no_restart=True)

    def node_ids(self) -> list[str]:
        """The node each actor runs on (to check where SPREAD placed them)."""
        return self._get([a.node_id.remote() for a in self.actors])

    def peak_memory(self) -> list[int]:
        return self._get([a.peak_memory.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _is_large(value) -> bool:
    """Tensors above 1 MiB go to the object store once instead of once per actor."""
    return hasattr(value, "nbytes") and value.nbytes > 1 << 20
