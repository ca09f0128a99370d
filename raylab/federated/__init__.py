"""Federated consensus SSL-ALM with intermittently connected virtual agents (pure torch; Ray only in
`actors.py` and `simulation.py`).

m agents minimise sum_i f_i(x) through  min sum_i f_i(x_i)  s.t.  x_i - x_0 = 0; agent i reaches the server in a
round with probability p_i, and its residual estimate (c_i / p_i)(x_i - x_0) is the one-sample constraint oracle
of SSL-ALM, whose update rules come from `raylab.constrained.updates`. FedAvg and FedProx run in the same
simulator with the same connections. Thousands to millions of agents share a shard, vectorised in torch.

    from raylab.federated import Availability, DataSpec, Hyper, LocalPool, Problem, Server
    problem = Problem(data=DataSpec(name="digits", num_agents=100, alpha=0.3), model="logistic",
                      availability=Availability(kind="bernoulli", p=0.1))
    hyper = Hyper(eta=0.05, tau=0.2, rho=0.4, server_lr_scale=0.03)
    pool = LocalPool(problem, hyper, ("ssl_alm", "fedavg"), num_shards=1)      # or simulation.RayPool
    server = Server(problem, hyper, pool.methods)
    for t in range(200):
        server.round(pool, t)
    print(server.evaluate(pool))

The experiment is `raylab run experiments/federated_alm.yaml`; the benchmark `raylab bench federated`;
see docs/federated.md.
"""
from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec, least_squares_solution
from raylab.federated.server import LocalPool, Server, run_rounds
from raylab.federated.spec import METHODS, Hyper, Problem

__all__ = ["METHODS", "Availability", "DataSpec", "Hyper", "LocalPool", "Problem", "Server",
           "least_squares_solution", "run_rounds"]
