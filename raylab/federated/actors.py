"""The Ray actor that hosts one shard of virtual agents: state in the actor, math in `AgentShard`.

`start_shard_actor` applies `ray.remote` where the actor is built, with the CPUs the config gives it; each actor
limits torch to that many threads, so actors placed one per CPU do not oversubscribe the machine.
"""
from __future__ import annotations

import resource

import ray
import torch

from raylab.federated.agents import AgentShard
from raylab.federated.spec import Hyper, Problem


class ShardActor:
    def __init__(self, problem: Problem, hyper: Hyper, methods: tuple[str, ...], agents, threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.shard = AgentShard(problem, hyper, methods, agents)

    def call(self, name: str, *args):
        return getattr(self.shard, name)(*args)

    def peak_memory(self) -> int:
        """This process's peak resident memory in bytes (Linux reports ru_maxrss in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_shard_actor(problem: Problem, hyper: Hyper, methods: tuple[str, ...], agents, *, num_cpus: float,
                      threads: int = 1):
    return ray.remote(num_cpus=num_cpus, max_restarts=0)(ShardActor).remote(problem, hyper, methods, agents, threads)
