"""What a federated simulation is made of, as small frozen records that travel to Ray actors unchanged.

    Problem   the agents' data, their model (the local objective f_i) and when they can reach the server
    Hyper     the solvers' step sizes: SSL-ALM's (eta, tau, beta, rho, mu, M_y) and FedAvg/FedProx's local SGD
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec
from raylab.federated.objectives import make_objective

METHODS = ("ssl_alm", "fedavg", "fedprox")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Problem:
    data: DataSpec = field(default_factory=DataSpec)
    model: str = "logistic"          # least_squares | logistic | mlp
    hidden: int = 32                 # mlp: hidden units
    bias: bool = True                # logistic: with an intercept
    availability: Availability = field(default_factory=Availability)
    seed: int = 0                    # minibatch draws and the MLP's initial weights
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {list(DTYPES)} (got {self.dtype!r})")
        self.objective()             # checks that model and data fit together

    @property
    def num_agents(self) -> int:
        return self.data.num_agents

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def objective(self):
        return make_objective(self.model, self.data.features, self.data.classes, self.hidden, self.bias)

    def initial_point(self) -> torch.Tensor:
        """x_0 = x_i = z at round 0: the same point for every agent and the server."""
        return self.objective().init(self.seed, self.torch_dtype)


@dataclass(frozen=True)
class Hyper:
    # SSL-ALM (see raylab.constrained.updates); the server's step is server_lr_scale * tau, since x_0 appears in
    # all m consensus constraints and its penalty curvature is m times an agent's (1.0: the plain stacked ALM)
    eta: float = 0.05
    tau: float = 0.05
    beta: float = 0.5
    rho: float = 1.0
    mu: float = 0.5
    M_y: float | None = 1e4
    z_update: str = "pre"            # pre: z + beta (x_t - z); post: z + beta (x_{t+1} - z)
    server_lr_scale: float | None = None   # None: 1 / m
    batch_size: int | None = 16      # per agent per gradient; None: every local sample (exact gradients)
    # FedAvg / FedProx: local SGD from the server model on the connected agents, then the server averages
    local_steps: int = 5
    local_lr: float = 0.1
    prox_mu: float = 0.1             # FedProx's proximal weight (FedAvg uses 0)

    def __post_init__(self):
        if self.z_update not in ("pre", "post"):
            raise ValueError(f"z_update: expected 'pre' or 'post' (got {self.z_update!r})")
        if not 1 <= self.local_steps <= 1000:    # each step has its own minibatch stream (see AgentShard)
            raise ValueError(f"local_steps: must lie in [1, 1000] (got {self.local_steps})")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1 or null (got {self.batch_size})")

    def server_tau(self, num_agents: int) -> float:
        return self.tau * (1.0 / num_agents if self.server_lr_scale is None else self.server_lr_scale)
