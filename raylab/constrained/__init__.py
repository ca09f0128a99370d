"""Stochastic constrained optimization, pure torch (never imports Ray).

    min_{x in X} E[f(x; xi)]   s.t.   E[A(zeta) x - b(zeta)] = 0

Methods: `ssl_alm` (dual-safeguarded stochastic smoothed linearized ALM, O(eps^-4) samples), `storm_alm`
(its STORM variant, O(eps^-3)), `prox_alm` (deterministic, Zhang & Luo 2020), and the baselines `penalty` and
`sgda`. A new problem in a few lines, here min E||x - xi||^2 over the simplex with x_1 = x_2:

    import torch
    from raylab.constrained import ConstrainedProblem, Simplex, solve

    c = torch.tensor([0.5, 0.1, 0.2, 0.9], dtype=torch.float64)
    problem = ConstrainedProblem(
        objective=lambda x, xi: ((x - xi) ** 2).sum(),                 # f(x; xi), a torch callable
        sample_xi=lambda g: c + 0.1 * torch.randn(4, generator=g, dtype=torch.float64),
        full_objective=lambda x: ((x - c) ** 2).sum() + 0.04,         # optional: exact F for stationarity
        dim=4, X=Simplex(), A=torch.tensor([[1.0, -1.0, 0.0, 0.0]]), b=torch.zeros(1), smoothness=2.0)
    result = solve(problem, method="ssl_alm", samples=20_000, seed=0)
    print(result.x, result.final["stationarity"], result.final["infeasibility"])

Run the experiments with `raylab run experiments/alm_ncqp.yaml` and `raylab run experiments/alm_rates.yaml`, the
benchmark with `raylab bench alm`; see docs/constrained.md. Ray wiring lives in `raylab.constrained.actors`
(imported on its own: this package does not import it).
"""
from raylab.constrained.measure import fit_exponent, samples_to_reach, tail_stationarity
from raylab.constrained.methods import METHODS, SGDA, SSLALM, Optimizer, Penalty, ProxALM, StormALM
from raylab.constrained.problem import ConstrainedProblem
from raylab.constrained.problems import fair_logistic, hs35, hs44, make_problem, nonconvex_qp, sampled_constraint_qp
from raylab.constrained.sets import Box, Free, NonNegative, Polyhedron, Simplex
from raylab.constrained.solve import COUNTS, NonFiniteIterate, Result, make_optimizer, solve
from raylab.constrained.stationarity import StationarityMeter, kkt_residual

__all__ = ["COUNTS", "METHODS", "SGDA", "SSLALM", "Box", "ConstrainedProblem", "Free", "NonFiniteIterate",
           "NonNegative", "Optimizer", "Penalty", "Polyhedron", "ProxALM", "Result", "Simplex", "StationarityMeter",
           "StormALM", "fair_logistic", "fit_exponent", "hs35", "hs44", "kkt_residual", "make_optimizer",
           "make_problem", "nonconvex_qp", "sampled_constraint_qp", "samples_to_reach", "solve", "tail_stationarity"]
