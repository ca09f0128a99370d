"""When each virtual agent can reach the server: i.i.d. Bernoulli(p), heterogeneous p_i, or bursty Markov on/off.

Every pattern has a per-agent marginal probability p_i of being connected in a round (the unbiased residual
estimate (c_i / p_i)(x_i - x_0) and the default step sizes use it). Draws are counter-based (`raylab.federated.rng`),
so agent i's connection in round t does not depend on which shard hosts it.

    avail = Availability(kind="markov", p=0.1, mean_on=5)
    state = avail.init_state(agents, seed=0)
    connected, state = avail.step(t, agents, state, seed=0)   # rounds t = 0, 1, 2, ... in order

Markov on/off: a connected agent drops with probability b = 1 / mean_on per round, a disconnected one comes
back with probability a = p b / (1 - p); the stationary on-probability is a / (a + b) = p, and the chain starts
in its stationary law, so every round's marginal is exactly p while connections come in bursts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field

from raylab.federated import rng

Tensor = torch.Tensor
KINDS = ("bernoulli", "heterogeneous", "markov")


@dataclass(frozen=True)
class Availability:
    __pydantic_config__ = ConfigDict(extra="forbid")
    kind: Literal["bernoulli", "heterogeneous", "markov"] = "bernoulli"
    p: Annotated[float, Field(gt=0, le=1)] = 0.1
    p_min: Annotated[float, Field(gt=0, le=1)] = 0.02    # heterogeneous: p_i uniform on [p_min, p_max]
    p_max: Annotated[float, Field(gt=0, le=1)] = 0.5
    mean_on: Annotated[float, Field(ge=1)] = 5.0         # markov: mean length of a connected burst, in rounds

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown pattern {self.kind!r}; expected one of {list(KINDS)}")
        if not 0 < self.p <= 1:
            raise ValueError(f"p: must lie in (0, 1] (got {self.p})")
        if self.kind == "heterogeneous" and not 0 < self.p_min <= self.p_max <= 1:
            raise ValueError(f"p_min: need 0 < p_min <= p_max <= 1 (got {self.p_min}, {self.p_max})")
        if self.kind == "markov" and self.p < 1:
            if self.mean_on < 1:
                raise ValueError(f"mean_on: must be at least 1 round (got {self.mean_on})")
            if self.p / (1 - self.p) > self.mean_on:
                raise ValueError(f"mean_on: markov with p={self.p} needs mean_on >= p / (1 - p) = "
                                 f"{self.p / (1 - self.p):.3g} (got {self.mean_on})")

    def probabilities(self, agents: Tensor, seed: int) -> Tensor:
        """Each agent's marginal probability of being connected in a round (float64)."""
        if self.kind == "heterogeneous":
            u = rng.uniform(seed, rng.AGENT_PROBABILITY, 0, agents)[:, 0]
            return self.p_min + (self.p_max - self.p_min) * u
        return torch.full((len(agents),), float(self.p), dtype=torch.float64)

    def init_state(self, agents: Tensor, seed: int) -> Tensor:
        """The on/off state before round 0 (only the Markov pattern uses it): drawn from the stationary law."""
        return rng.uniform(seed, rng.AVAILABILITY_INIT, 0, agents)[:, 0] < self.p

    def step(self, t: int, agents: Tensor, state: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """(connected in round t, the state after round t); call for t = 0, 1, 2, ... in order."""
        u = rng.uniform(seed, rng.AVAILABILITY, t, agents)[:, 0]
        if self.kind != "markov":
            connected = u < self.probabilities(agents, seed)
            return connected, connected
        if self.p >= 1:
            return torch.ones_like(state), torch.ones_like(state)
        drop = 1.0 / self.mean_on
        rejoin = self.p * drop / (1 - self.p)
        connected = torch.where(state, u >= drop, u < rejoin)
        return connected, connected
