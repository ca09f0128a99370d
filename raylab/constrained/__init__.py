"""Stochastic constrained optimization, pure torch (never imports Ray).

    min_{x in X} E[f(x; xi)]   s.t.   E[A(zeta) x - b(zeta)] = 0

Methods: `ssl_alm` (dual-safeguarded stochastic smoothed linearized ALM, O(eps^-4) samples), `storm_alm`
(its STORM variant, O(eps^-3)), `prox_alm` (deterministic, Zhang & Luo 2020), and the baselines `penalty` and
`sgda`. A new problem in a few lines, here min E||x - xi||^2 over the simplex with x_1 = x_2:

    import torch
    from raylab.constrained import Problem, Simplex, solve

    c = torch.tensor([0.5, 0.1, 0.2, 0.9], dtype=torch.float64)
    problem = Problem(
        objective=lambda x, xi: ((x - xi) ** 2).sum(),                 # f(x; xi), a torch callable
        sample_xi=lambda g: c + 0.1 * torch.randn(4, generator=g, dtype=torch.float64),
        full_objective=lambda x: ((x - c) ** 2).sum() + 0.04,         # optional: exact F for stationarity
        dim=4, X=Simplex(), A=torch.tensor([[1.0, -1.0, 0.0, 0.0]]), b=torch.zeros(1), smoothness=2.0)
    result = solve(problem, method="ssl_alm", samples=20_000, seed=0)
    print(result.x, result.final["stationarity"], result.final["infeasibility"])

Run the experiments with `raylab run experiments/alm_ncqp.yaml` and `raylab run experiments/alm_rates.yaml`, the
benchmark with `raylab bench alm`; see docs/constrained.md.
"""
from raylab.constrained.methods import METHODS, SGDA, SSLALM, Optimizer, Penalty, ProxALM, StormALM
from raylab.constrained.problem import Problem
from raylab.constrained.problems import fair_logistic, nonconvex_qp, sampled_constraint_qp
from raylab.constrained.sets import Box, Free, NonNegative, Polyhedron, Simplex
from raylab.constrained.solve import Result, make_optimizer, solve
from raylab.constrained.stationarity import StationarityMeter, kkt_residual

__all__ = ["METHODS", "SGDA", "SSLALM", "Box", "Free", "NonNegative", "Optimizer", "Penalty", "Polyhedron",
           "Problem", "ProxALM", "Result", "Simplex", "StationarityMeter", "StormALM", "fair_logistic",
           "kkt_residual", "make_optimizer", "nonconvex_qp", "sampled_constraint_qp", "solve"]
