"""What a federated simulation is made of: one record that travels to Ray actors unchanged.

    Problem   the agents' data (a `DataSpec` or the user's `ArrayData`), their model (the local objective f_i),
              when they can reach the server (`Availability`), the seed and the dtype

The methods and their hyper-parameters are `raylab.federated.methods`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raylab.federated.availability import Availability
from raylab.federated.data import ArrayData, DataSpec
from raylab.federated.objectives import ModelSpec

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True, eq=False)
class Problem:
    data: DataSpec | ArrayData = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    availability: Availability = field(default_factory=Availability)
    seed: int = 0                    # minibatch draws and the MLP's initial weights
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {list(DTYPES)} (got {self.dtype!r})")
        self.objective()             # checks that model and data fit together

    @property
    def source(self):
        """The object that builds each agent's data (the ArrayData itself, or what the DataSpec names)."""
        return self.data if isinstance(self.data, ArrayData) else self.data.build(self.seed)

    @property
    def num_agents(self) -> int:
        return self.source.num_agents

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def objective(self):
        return self.model.objective(self.source.dim, self.source.classes, self.seed)

    def initial_point(self) -> torch.Tensor:
        """x_0 = x_i = z at round 0: the same point for every agent and the server."""
        return self.objective().init(self.seed, self.torch_dtype)

    def solution(self):
        """The consensus optimum x* when it has a closed form (least squares), else None."""
        if self.model.name != "least_squares":
            return None
        return torch.as_tensor(self.source.least_squares_solution(), dtype=torch.float64)
