"""Each virtual agent's local data, non-i.i.d. across agents, as padded tensors a shard can compute on at once.

    ArrayData       the user's own data: one (features, targets) array pair per agent (ragged n_i allowed)
    DataSpec        the config record (`data:` in YAML); its kinds:
      digits          scikit-learn's handwritten digits split over agents with Dirichlet(alpha) label skew
      dataset         any scikit-learn or `datasets` table (`source`), split by Dirichlet label skew, by
                      label-sorted shards per agent, or by a natural column (one agent per value)
      least_squares   A_i x ~ b_i with agent-specific solutions (heterogeneity); consensus x* in closed form
      synthetic       a benchmark workload for millions of agents: agent i's rows are drawn from a shared pool
                      of labelled points by counter-based hashing, so agents cost no data memory
      arrays          an .npz file with arrays features_0, targets_0, features_1, ... (one pair per agent)

    data = ArrayData(features=[A_1, A_2], targets=[b_1, b_2])
    shard_data = data.agent_data(torch.arange(2))      # PaddedData: X (2, n_max, d), Y, mask, counts
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from raylab.federated import rng

Tensor = torch.Tensor


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

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.X, self.Y, self.mask, self.counts))


class ArrayData:
    """Per-agent arrays: features[i] is (n_i, d), targets[i] is (n_i,) (real values, or integer class labels).
    Checked on construction: one line naming the agent for ragged, mismatched, empty or non-finite arrays."""

    def __init__(self, features, targets, test_features=None, test_targets=None):
        if len(features) != len(targets):
            raise ValueError(f"data: {len(features)} feature arrays but {len(targets)} target arrays")
        if not len(features):
            raise ValueError("data: no agents (empty features list)")
        self.features = [_checked(np.asarray(a), i, "features", 2) for i, a in enumerate(features)]
        self.targets = [_checked(np.asarray(b), i, "targets", 1) for i, b in enumerate(targets)]
        dims = {a.shape[1] for a in self.features}
        if len(dims) > 1:
            first = self.features[0].shape[1]
            bad = next(i for i, a in enumerate(self.features) if a.shape[1] != first)
            raise ValueError(f"data: agent {bad}: features have {self.features[bad].shape[1]} columns, "
                             f"agent 0's have {first}")
        for i, (a, b) in enumerate(zip(self.features, self.targets)):
            if len(a) != len(b):
                raise ValueError(f"data: agent {i}: {len(a)} feature rows but {len(b)} targets")
        self.integer_targets = all(np.issubdtype(b.dtype, np.integer) for b in self.targets)
        self.test = None
        if test_features is not None:
            self.test = (np.asarray(test_features, dtype=np.float64), np.asarray(test_targets))

    @classmethod
    def load(cls, path: str | Path) -> "ArrayData":
        """An .npz with features_0, targets_0, features_1, ... (and optionally test_features, test_targets)."""
        with np.load(path) as z:
            m = sum(1 for k in z.files if k.startswith("features_"))
            missing = [f"{k}_{i}" for i in range(m) for k in ("features", "targets") if f"{k}_{i}" not in z.files]
            if missing or not m:
                raise ValueError(f"data.path: {path} lacks {missing[:3] or ['features_0']}")
            test = (z["test_features"], z["test_targets"]) if "test_features" in z.files else (None, None)
            return cls([z[f"features_{i}"] for i in range(m)], [z[f"targets_{i}"] for i in range(m)], *test)

    @property
    def num_agents(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features[0].shape[1]

    @property
    def classes(self) -> int:
        """0 for real-valued targets, else the number of classes (labels 0..classes-1)."""
        if not self.integer_targets:
            return 0
        return int(max(int(b.max()) for b in self.targets)) + 1

    def agent_data(self, agents: Tensor, dtype: torch.dtype = torch.float32) -> PaddedData:
        chosen = [int(a) for a in agents]
        counts = torch.tensor([len(self.targets[i]) for i in chosen], dtype=torch.int64)
        n_max = int(counts.max())
        X = torch.zeros(len(chosen), n_max, self.dim, dtype=dtype)
        Y = torch.zeros(len(chosen), n_max, dtype=torch.int64 if self.integer_targets else dtype)
        for k, i in enumerate(chosen):
            X[k, : counts[k]] = torch.as_tensor(self.features[i], dtype=dtype)
            Y[k, : counts[k]] = torch.as_tensor(self.targets[i]).to(Y.dtype)
        return PaddedData(X, Y, counts)

    def test_set(self, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        if self.test is None:
            return None
        return torch.as_tensor(self.test[0], dtype=dtype), torch.as_tensor(self.test[1])

    def least_squares_solution(self) -> np.ndarray:
        """x* of min sum_i 1/(2 n_i) ||A_i x - b_i||^2: (sum_i A_i^T A_i / n_i)^-1 sum_i A_i^T b_i / n_i."""
        gram = sum(a.T @ a / len(a) for a in self.features)
        rhs = sum(a.T @ b / len(a) for a, b in zip(self.features, self.targets))
        return np.linalg.solve(gram, rhs)


def _checked(array: np.ndarray, agent: int, what: str, ndim: int) -> np.ndarray:
    if array.ndim != ndim:
        raise ValueError(f"data: agent {agent}: {what} must be a {ndim}-D array (got shape {array.shape})")
    if len(array) == 0:
        raise ValueError(f"data: agent {agent}: no samples (empty {what})")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"data: agent {agent}: {what} are not numbers (dtype {array.dtype})")
    if not np.isfinite(array).all():
        raise ValueError(f"data: agent {agent}: {what} contain NaN or inf")
    return array


@dataclass(frozen=True)
class DataSpec:
    """The `data:` block of a federated config (see the module docstring for the kinds)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    kind: Literal["digits", "least_squares", "synthetic", "arrays", "dataset"] = "digits"
    num_agents: Annotated[int, Field(ge=1)] = 100     # arrays, partition column: taken from the data
    alpha: Annotated[float, Field(gt=0)] = 0.5        # digits, dirichlet: concentration of the label skew
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2   # digits, dataset: held out for test accuracy
    dim: Annotated[int, Field(ge=1)] = 5              # least_squares: unknowns; synthetic: features
    rows: Annotated[int, Field(ge=1)] = 20            # least_squares / synthetic: rows per agent
    heterogeneity: Annotated[float, Field(ge=0)] = 1.0   # least_squares: spread of the agents' own x_i*
    noise: Annotated[float, Field(ge=0)] = 0.1
    path: str | None = None                           # arrays: the .npz file
    source: str | None = None                         # dataset: sklearn:NAME, a table file, a datasets name
    label: str = "label"                              # dataset: the label column
    partition: Literal["dirichlet", "shards", "column"] = "dirichlet"   # digits / dataset
    shards_per_agent: Annotated[int, Field(ge=1)] = 2   # partition shards: label-sorted shards per agent
    column: str | None = None                         # partition column: one agent per distinct value

    def __post_init__(self):
        if self.kind == "digits" and self.num_agents > 1000:
            raise ValueError(f"num_agents: digits has 1,797 images, too few for {self.num_agents} agents")
        if (self.kind == "arrays") != (self.path is not None):
            raise ValueError("path: give it exactly when kind is arrays")
        if self.path is not None and not Path(self.path).is_file():
            raise ValueError(f"path: no such file {self.path!r}")
        if (self.kind == "dataset") != (self.source is not None):
            raise ValueError("source: give it exactly when kind is dataset")
        if (self.partition == "column") != (self.column is not None):
            raise ValueError("column: give it exactly when partition is column")

    def build(self, seed: int) -> "ArrayData | Synthetic":
        """What holds the agents' data: built (and cached) from this record and the run's seed."""
        return _source(self, seed)


class Synthetic:
    """Binary labels from a shared pool of 8192 points; agent i's row j is pool[hash(i, j) mod 8192]."""

    def __init__(self, spec: DataSpec, seed: int, pool_size: int = 8192):
        self.seed, self.rows, self.num_agents, self.dim, self.classes = seed, spec.rows, spec.num_agents, spec.dim, 2
        gen = torch.Generator().manual_seed(seed)
        self.pool_X = torch.randn(pool_size, spec.dim, generator=gen, dtype=torch.float64)
        w_true = torch.randn(spec.dim, generator=gen, dtype=torch.float64)
        logits = self.pool_X @ w_true + spec.noise * torch.randn(pool_size, generator=gen, dtype=torch.float64)
        self.pool_Y = (logits > 0).to(torch.float64)

    def agent_data(self, agents: Tensor, dtype: torch.dtype = torch.float32) -> "PooledData":
        return PooledData(self, agents, dtype)

    def test_set(self, dtype: torch.dtype) -> None:
        return None


class PooledData:
    """A shard's synthetic agents: the pool rows of each agent hashed once (int32 indices), then gathered."""

    def __init__(self, source: Synthetic, agents: Tensor, dtype: torch.dtype):
        self.pool_X, self.pool_Y = source.pool_X.to(dtype), source.pool_Y.to(dtype)
        self.rows = torch.cat([rng.integers(source.seed, rng.DATA_ROWS, 0, part, source.rows, len(self.pool_X))
                               for part in agents.split(1 << 16)]).to(torch.int32)
        self.counts = torch.full((len(agents),), source.rows, dtype=torch.int64)

    def gather(self, local: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        rows = self.rows[local] if idx is None else torch.gather(self.rows[local], 1, idx.to(torch.int64))
        flat = rows.reshape(-1)                  # index_select: 3x faster than advanced indexing here
        X = self.pool_X.index_select(0, flat).view(*rows.shape, self.pool_X.shape[1])
        return X, self.pool_Y.index_select(0, flat).view(rows.shape), torch.ones(rows.shape, dtype=torch.bool)

    def nbytes(self) -> int:
        return self.rows.nbytes + self.counts.nbytes


@functools.lru_cache(maxsize=4)
def _source(spec: DataSpec, seed: int):
    if spec.kind in ("digits", "dataset"):
        return _partitioned(spec, seed)
    if spec.kind == "synthetic":
        return Synthetic(spec, seed)
    if spec.kind == "arrays":
        return ArrayData.load(spec.path)
    pairs = [_least_squares_agent(spec, seed, a) for a in range(spec.num_agents)]
    return ArrayData([A for A, _ in pairs], [b for _, b in pairs])


def dirichlet_parts(y: np.ndarray, rows: np.ndarray, num_agents: int, alpha: float,
                    rs: np.random.RandomState) -> list[np.ndarray]:
    """Label skew: each class's rows `rows` shared among the agents in Dirichlet(alpha) proportions (small
    alpha: each agent sees few classes); an agent left empty takes a row from the largest agent."""
    parts: list[list[int]] = [[] for _ in range(num_agents)]
    for c in np.unique(y[rows]):
        members = rows[y[rows] == c]
        rs.shuffle(members)
        share = rs.dirichlet(np.full(num_agents, alpha))
        cuts = (np.cumsum(share)[:-1] * len(members)).astype(int)
        for agent, chunk in enumerate(np.split(members, cuts)):
            parts[agent] += chunk.tolist()
    for agent in range(num_agents):
        while not parts[agent]:
            donor = max(range(num_agents), key=lambda a: len(parts[a]))
            parts[agent].append(parts[donor].pop())
    return [np.array(p) for p in parts]


def shard_parts(y: np.ndarray, rows: np.ndarray, num_agents: int, shards_per_agent: int,
                rs: np.random.RandomState) -> list[np.ndarray]:
    """Pathological non-i.i.d. (McMahan et al.): rows sorted by label, cut into num_agents * k shards, k each."""
    ordered = rows[np.argsort(y[rows], kind="stable")]
    shards = np.array_split(ordered, num_agents * shards_per_agent)
    deal = rs.permutation(len(shards)).reshape(num_agents, shards_per_agent)
    return [np.concatenate([shards[k] for k in hand]) for hand in deal]


def column_parts(values: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Natural partition: one agent per distinct value of a column (a user id, a hospital, a device)."""
    return [rows[values[rows] == v] for v in np.unique(values[rows])]


def load_table(source: str, label: str, column: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(features, labels, natural column or None) of `sklearn:NAME` (a scikit-learn loader such as load_wine)
    or of a `datasets` table: a local .csv/.json/.jsonl/.parquet file, a local dataset directory or a hub name."""
    if source.startswith("sklearn:"):
        import sklearn.datasets

        loader = getattr(sklearn.datasets, source.removeprefix("sklearn:"), None)
        if loader is None or not callable(loader):
            raise ValueError(f"data.source: scikit-learn has no loader {source.removeprefix('sklearn:')!r}")
        X, y = loader(return_X_y=True)
        if column is not None:
            raise ValueError("data.column: a scikit-learn table has no named columns; use partition dirichlet/shards")
        return np.asarray(X, dtype=np.float64), np.asarray(y), None
    import datasets

    builders = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    suffix = Path(source).suffix
    table = (datasets.load_dataset(builders[suffix], data_files=source, split="train") if suffix in builders
             else datasets.load_dataset(source, split="train")).to_pandas()
    for key, name in (("label", label), ("column", column)):
        if name is not None and name not in table.columns:
            raise ValueError(f"data.{key}: no column {name!r} in {source} (columns: {list(table.columns)[:8]})")
    natural = table.pop(column).to_numpy() if column is not None else None
    y = table.pop(label).to_numpy()
    try:
        X = table.to_numpy(dtype=np.float64)
    except ValueError:
        raise ValueError(f"data.source: {source}: every column but the label and the natural one must be numeric"
                         ) from None
    return X, y, natural


def _partitioned(spec: "DataSpec", seed: int) -> ArrayData:
    """A table split into a test set (test_fraction) and agents, features standardised on the training rows
    (digits: pixels / 16, as the images are)."""
    if spec.kind == "digits":
        X, y, natural = load_table("sklearn:load_digits", "label", None)
        X = X / 16.0
    else:
        X, y, natural = load_table(spec.source, spec.label, spec.column)
    y = np.unique(y, return_inverse=True)[1]
    rs = np.random.RandomState(seed)
    order = rs.permutation(len(y))
    n_test = int(round(spec.test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    if spec.kind == "dataset":
        mean, std = X[train].mean(0), X[train].std(0)
        X = (X - mean) / np.where(std > 0, std, 1.0)
    if spec.partition == "column":
        parts = column_parts(natural, train)
    elif spec.partition == "shards":
        parts = shard_parts(y, train, spec.num_agents, spec.shards_per_agent, rs)
    else:
        parts = dirichlet_parts(y, train, spec.num_agents, spec.alpha, rs)
    return ArrayData([X[p] for p in parts], [y[p] for p in parts], X[test], y[test])


def _least_squares_agent(spec: DataSpec, seed: int, agent: int) -> tuple[np.ndarray, np.ndarray]:
    """Agent i's (A_i, b_i), from its own seed so any subset of agents can be built alone."""
    rs = np.random.RandomState([seed, agent])
    common = np.random.RandomState([seed, 10**6]).randn(spec.dim)
    x_own = common + spec.heterogeneity * rs.randn(spec.dim)
    A = rs.randn(spec.rows, spec.dim)
    return A, A @ x_own + spec.noise * rs.randn(spec.rows)
