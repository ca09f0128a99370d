"""The actor-sharded pool: virtual agents split over Ray actors, with dead actors replaced on the spot.

`RayPool` has the interface of `raylab.federated.server.LocalPool`, so `Server` and `run_rounds` drive it with
the same code. When an actor dies during a round (a crash, an OOM kill, `ray.kill`), `map` raises `ShardLost`;
`run_rounds` then calls `replace_lost`, which starts a fresh actor for each dead one, and restores every shard
and the server from the last snapshot (the last checkpoint), so the run goes on and ends where an uninterrupted
run would.

    pool = RayPool(problem, hyper, ("ssl_alm",), num_actors=2, cpus_per_actor=1)
"""
from __future__ import annotations

import ray
from ray.exceptions import RayActorError

from raylab.federated.actors import start_shard_actor
from raylab.federated.server import Pool, ShardLost, shard_ranges
from raylab.federated.spec import Hyper, Problem


def default_num_actors() -> int:
    """One actor per CPU of the Ray cluster."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class RayPool(Pool):
    def __init__(self, problem: Problem, hyper: Hyper, methods: tuple[str, ...], num_actors: int | None = None,
                 cpus_per_actor: float = 1.0, threads: int = 1):
        self.methods = tuple(methods)
        self._build = lambda agents: start_shard_actor(problem, hyper, self.methods, agents,
                                                      num_cpus=cpus_per_actor, threads=threads)
        self.parts = shard_ranges(problem.num_agents, num_actors or default_num_actors())
        self.sizes = [len(p) for p in self.parts]
        self.actors = [self._build(part) for part in self.parts]
        self.lost: set[int] = set()
        self.restarts = 0
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
            self.restarts += 1
        self.lost.clear()

    def kill(self, k: int) -> None:
        """Fault injection: kill actor k the way a crash would (no graceful exit, no automatic restart)."""
        ray.kill(self.actors[k], no_restart=True)

    def peak_memory(self) -> list[int]:
        return self._get([a.peak_memory.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _is_large(value) -> bool:
    """Tensors above 1 MiB go to the object store once instead of once per actor."""
    return hasattr(value, "nbytes") and value.nbytes > 1 << 20
