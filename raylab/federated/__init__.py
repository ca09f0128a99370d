"""Federated consensus SSL-ALM with intermittently connected virtual agents (pure torch; Ray only in `actors.py`).

m agents minimise sum_i f_i(x) through  min sum_i f_i(x_i)  s.t.  x_i - x_0 = 0; agent i reaches the server in a
round with probability p_i. SSL-ALM's update rules come from `raylab.constrained.updates`; FedAvg, FedProx and
SCAFFOLD run in the same simulator with the same connections. Thousands to millions of agents share a shard,
vectorised in torch. The entry point for your own data:

    from raylab.federated import ArrayData, simulate
    result = simulate(ArrayData(features=[A_1, A_2], targets=[b_1, b_2]), model="least_squares",
                      method="ssl_alm", rounds=3000, availability={"kind": "markov", "p": 0.1, "mean_on": 5})
    result.x, result.history

The experiment is `raylab run experiments/federated_alm.yaml`; the benchmark `raylab bench federated`;
see docs/federated.md.
"""
from raylab.federated.availability import Availability
from raylab.federated.data import ArrayData, DataSpec
from raylab.federated.methods import METHODS, AlmHyper, LocalHyper
from raylab.federated.objectives import ModelSpec
from raylab.federated.server import LocalPool, Server
from raylab.federated.simulate import Result, simulate
from raylab.federated.spec import Problem

__all__ = ["METHODS", "AlmHyper", "ArrayData", "Availability", "DataSpec", "LocalHyper", "LocalPool", "ModelSpec",
           "Problem", "Result", "Server", "simulate"]
