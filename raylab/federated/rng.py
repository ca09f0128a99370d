"""Counter-based random numbers for virtual agents: a draw is a pure function of (seed, stream, step, agent, j).

The federated simulator must give the same run however the agents are sharded over actors (and after an actor
is restarted and replays rounds), so no draw may depend on a generator's position. Each uniform is the
splitmix64 hash of its coordinates, computed for a whole tensor of agent ids at once in int64 torch arithmetic
(wrap-around multiplication, logical shifts emulated with masks).

    u = uniform(seed=0, stream=AVAILABILITY, step=12, agents=torch.arange(5), n=3)   # (5, 3) in [0, 1)
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor

# streams: one per kind of draw, so that e.g. availability and minibatch indices never share numbers
AVAILABILITY, AVAILABILITY_INIT, AGENT_PROBABILITY, MINIBATCH, DATA_ROWS, RHO_DRAW, POWER_ITERATION = range(1, 8)

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the signed int64 torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(z: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors: a bijection of 64-bit patterns that scrambles every bit."""
    z = z + _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(_MUL1)
    z = (z ^ _shr(z, 27)) * _signed(_MUL2)
    return z ^ _shr(z, 31)


def mix_int(z: int) -> int:
    """The same function on a Python int (the reference the tensor version is tested against)."""
    z = (z + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _key(seed: int, stream: int, step: int) -> int:
    return _signed(mix_int(mix_int(mix_int(seed & _MASK64) ^ stream) ^ (step & _MASK64)))


def bits(seed: int, stream: int, step: int, agents: Tensor, n: int) -> Tensor:
    """(len(agents), n) int64 hashes, one per (agent, j), j = 0..n-1."""
    agent_key = mix(agents.to(torch.int64) ^ _key(seed, stream, step))
    return mix(agent_key[:, None] + torch.arange(n, dtype=torch.int64))


def uniform(seed: int, stream: int, step: int, agents: Tensor, n: int = 1) -> Tensor:
    """(len(agents), n) float64 uniforms in [0, 1) (53 random bits each)."""
    return _shr(bits(seed, stream, step, agents, n), 11).to(torch.float64) * 2.0 ** -53


def integers(seed: int, stream: int, step: int, agents: Tensor, n: int, high: Tensor | int) -> Tensor:
    """(len(agents), n) int64 in [0, high), high per agent (a tensor of len(agents)) or shared."""
    high = torch.as_tensor(high, dtype=torch.int64)
    if high.ndim == 1:
        high = high[:, None]
    return (uniform(seed, stream, step, agents, n) * high).to(torch.int64).clamp_max(high - 1)
