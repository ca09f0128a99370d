"""Each virtual agent's local data, non-i.i.d. across agents, as padded tensors a shard can compute on at once.

    digits          scikit-learn's handwritten digits (1,797 images of 8x8 pixels, ships with the package),
                    split over agents with Dirichlet(alpha) label skew (small alpha: each agent sees few classes)
    least_squares   A_i x ~ b_i with agent-specific x_i* (heterogeneity), consensus solution in closed form
    synthetic       a benchmark workload for up to millions of agents: agent i's `rows` rows are drawn from a
                    shared pool of labelled points by counter-based hashing, so agents cost no memory

    spec = DataSpec(name="digits", num_agents=100, alpha=0.3)
    data = agent_data(spec, torch.arange(50))    # the first 50 agents' data
    X, Y, mask = data.gather(torch.arange(50))   # (50, n_max, 64), (50, n_max), (50, n_max)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from raylab.federated import rng

Tensor = torch.Tensor
DATASETS = ("digits", "least_squares", "synthetic")


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    num_agents: int = 100
    alpha: float = 0.5            # digits: Dirichlet concentration of the label skew
    test_fraction: float = 0.2    # digits: held out for test accuracy
    dim: int = 5                  # least_squares: unknowns; synthetic: features
    rows: int = 20                # least_squares / synthetic: rows per agent
    heterogeneity: float = 1.0    # least_squares: spread of the agents' own solutions x_i*
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"data.name: unknown dataset {self.name!r}; expected one of {list(DATASETS)}")
        if self.num_agents < 1:
            raise ValueError(f"num_agents: need at least one agent (got {self.num_agents})")
        if self.name == "digits" and self.num_agents > 1000:
            raise ValueError(f"num_agents: digits has 1,797 images, too few for {self.num_agents} agents")

    @property
    def features(self) -> int:
        return 64 if self.name == "digits" else self.dim

    @property
    def classes(self) -> int:
        """10 for digits, 2 for synthetic (binary labels), 0 for least squares (real-valued targets)."""
        return {"digits": 10, "synthetic": 2, "least_squares": 0}[self.name]


class PaddedData:
    """Agents' samples stored as (agents, n_max, features), padding masked out."""

    def __init__(self, X: Tensor, Y: Tensor, counts: Tensor):
        self.X, self.Y, self.counts = X, Y, counts
        self.mask = torch.arange(X.shape[1])[None, :] < counts[:, None]

    def gather(self, local: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Rows of the agents `local` (positions in this shard): all of them, or idx (agents, k) per agent."""
        if idx is None:
            return self.X[local], self.Y[local], self.mask[local]
        rows = local[:, None]
        return self.X[rows, idx], self.Y[rows, idx], torch.ones(idx.shape, dtype=torch.bool)


class PooledData:
    """Synthetic agents: agent i's row j is pool[hash(i, j) mod P]; nothing per agent is stored."""

    def __init__(self, spec: DataSpec, agents: Tensor, dtype: torch.dtype, pool_size: int = 8192):
        gen = torch.Generator().manual_seed(spec.seed)
        self.pool_X = torch.randn(pool_size, spec.dim, generator=gen, dtype=torch.float64)
        w_true = torch.randn(spec.dim, generator=gen, dtype=torch.float64)
        logits = self.pool_X @ w_true + spec.noise * torch.randn(pool_size, generator=gen, dtype=torch.float64)
        self.pool_X = self.pool_X.to(dtype)
        self.pool_Y = (logits > 0).to(dtype)
        self.agents, self.rows, self.seed = agents, spec.rows, spec.seed
        self.counts = torch.full((len(agents),), spec.rows, dtype=torch.int64)

    def gather(self, local: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if idx is None:
            idx = torch.arange(self.rows).expand(len(local), self.rows)
        own_rows = rng.integers(self.seed, rng.DATA_ROWS, 0, self.agents[local], self.rows, len(self.pool_X))
        pool_rows = torch.gather(own_rows, 1, idx)
        return self.pool_X[pool_rows], self.pool_Y[pool_rows], torch.ones(idx.shape, dtype=torch.bool)


@functools.lru_cache(maxsize=4)
def _digits_split(num_agents: int, alpha: float, test_fraction: float, seed: int):
    """(per-agent index arrays into the training set, X_train, y_train, X_test, y_test), deterministic in seed."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0                                             # pixels are 0..16
    rs = np.random.RandomState(seed)
    order = rs.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    parts: list[list[int]] = [[] for _ in range(num_agents)]
    for c in range(10):
        members = train[y[train] == c]
        rs.shuffle(members)
        share = rs.dirichlet(np.full(num_agents, alpha))
        cuts = (np.cumsum(share)[:-1] * len(members)).astype(int)
        for agent, chunk in enumerate(np.split(members, cuts)):
            parts[agent] += chunk.tolist()
    for agent in range(num_agents):                          # every agent holds at least one image
        while not parts[agent]:
            donor = max(range(num_agents), key=lambda a: len(parts[a]))
            parts[agent].append(parts[donor].pop())
    return [np.array(p) for p in parts], X, y, X[test], y[test]


def _least_squares_agent(spec: DataSpec, agent: int) -> tuple[np.ndarray, np.ndarray]:
    """Agent i's (A_i, b_i), from its own seed so any subset of agents can be built alone."""
    rs = np.random.RandomState([spec.seed, agent])
    common = np.random.RandomState([spec.seed, 10**6]).randn(spec.dim)
    x_own = common + spec.heterogeneity * rs.randn(spec.dim)
    A = rs.randn(spec.rows, spec.dim)
    return A, A @ x_own + spec.noise * rs.randn(spec.rows)


def agent_data(spec: DataSpec, agents: Tensor, dtype: torch.dtype = torch.float32) -> PaddedData | PooledData:
    """The local data of `agents` (global ids), built deterministically from the spec."""
    if spec.name == "synthetic":
        return PooledData(spec, agents, dtype)
    if spec.name == "least_squares":
        pairs = [_least_squares_agent(spec, int(a)) for a in agents]
        X = torch.tensor(np.stack([A for A, _ in pairs]), dtype=dtype)
        Y = torch.tensor(np.stack([b for _, b in pairs]), dtype=dtype)
        return PaddedData(X, Y, torch.full((len(agents),), spec.rows, dtype=torch.int64))
    parts, X_train, y_train, _, _ = _digits_split(spec.num_agents, spec.alpha, spec.test_fraction, spec.seed)
    chosen = [parts[int(a)] for a in agents]
    n_max = max(len(p) for p in chosen)
    X = torch.zeros(len(chosen), n_max, 64, dtype=dtype)
    Y = torch.zeros(len(chosen), n_max, dtype=torch.int64)
    for k, p in enumerate(chosen):
        X[k, : len(p)] = torch.tensor(X_train[p], dtype=dtype)
        Y[k, : len(p)] = torch.tensor(y_train[p])
    return PaddedData(X, Y, torch.tensor([len(p) for p in chosen], dtype=torch.int64))


def test_set(spec: DataSpec, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor] | None:
    """Held-out (X, y) for test accuracy: digits' test split; None for the other datasets."""
    if spec.name != "digits":
        return None
    _, _, _, X_test, y_test = _digits_split(spec.num_agents, spec.alpha, spec.test_fraction, spec.seed)
    return torch.tensor(X_test, dtype=dtype), torch.tensor(y_test)


def least_squares_solution(spec: DataSpec) -> np.ndarray:
    """The consensus solution x* = (sum_i A_i^T A_i)^-1 sum_i A_i^T b_i of min sum_i 1/2 ||A_i x - b_i||^2."""
    gram, rhs = np.zeros((spec.dim, spec.dim)), np.zeros(spec.dim)
    for agent in range(spec.num_agents):
        A, b = _least_squares_agent(spec, agent)
        gram += A.T @ A
        rhs += A.T @ b
    return np.linalg.solve(gram, rhs)
