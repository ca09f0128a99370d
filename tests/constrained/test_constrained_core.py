"""raylab.constrained: exact solutions, stationarity on the nonconvex QP, safeguard, STORM, slack, resume."""
import io
import subprocess
import sys

import pytest
import torch

from raylab.constrained import (
    METHODS,
    Box,
    ConstrainedProblem,
    NonNegative,
    Polyhedron,
    Simplex,
    fair_logistic,
    make_optimizer,
    nonconvex_qp,
    sampled_constraint_qp,
    solve,
)
from raylab.constrained.updates import storm_direction

DT = torch.float64


def min_norm_problem(noise: float = 0.0) -> ConstrainedProblem:
    """min ||x||^2 s.t. x1 + x2 = 1: x* = (1/2, 1/2), y* = -1. Gradients come from autograd."""
    return ConstrainedProblem(lambda x, xi: x @ x + (0.0 if xi is None else xi @ x), 2,
                   sample_xi=(lambda g: noise * torch.randn(2, generator=g, dtype=DT)) if noise else None,
                   full_objective=lambda x: x @ x, A=torch.tensor([[1.0, 1.0]]), b=torch.tensor([1.0]),
                   smoothness=2.0)


def test_exact_oracle_reaches_the_kkt_point():
    for method in ("prox_alm", "ssl_alm"):
        r = solve(min_norm_problem(), method, samples=3000, oracle="exact", log_every=3000)
        assert torch.allclose(r.x, torch.tensor([0.5, 0.5], dtype=DT), atol=1e-8), method
        assert abs(float(r.y[0]) + 1.0) < 1e-6, method
        assert r.final["kkt"] < 1e-7 and r.final["stationarity"] < 1e-5  # the meter solves to 1e-6


def test_stochastic_methods_approach_the_kkt_point():
    for method in ("ssl_alm", "storm_alm"):
        r = solve(min_norm_problem(noise=0.1), method, samples=3000, seed=1, log_every=1000)
        assert torch.allclose(r.x, torch.tensor([0.5, 0.5], dtype=DT), atol=2e-2), (method, r.x)
        assert abs(float(r.y[0]) + 1.0) < 0.1, (method, r.y)


@pytest.mark.parametrize("method", ["ssl_alm", "storm_alm"])
def test_nonconvex_qp_reaches_stationarity(method):
    p = nonconvex_qp(dim=20, constraints=5, X="box", seed=0)
    assert torch.allclose(p.A @ p.x_feasible, p.b) and bool(torch.all((p.x_feasible > 0) & (p.x_feasible < 1)))
    origin = p.full_grad(torch.zeros(20, dtype=DT))
    eig = torch.linalg.eigvalsh(torch.stack([p.full_grad(e) - origin for e in torch.eye(20, dtype=DT)]))
    assert float(eig.min()) == pytest.approx(-1.0) and float(eig.max()) == pytest.approx(10.0)
    r = solve(p, method, samples=12_000, seed=0, log_every=3000)
    assert r.final["stationarity"] <= 1e-2
    assert r.final["infeasibility"] <= 1e-2
    assert r.history[0]["stationarity"] > 1.0  # it started far away
    assert bool(torch.all((r.x >= 0) & (r.x <= 1)))


def test_simplex_qp_stays_on_the_simplex():
    p = nonconvex_qp(dim=10, constraints=3, X="simplex", seed=2)
    r = solve(p, "ssl_alm", samples=3000, seed=0, log_every=1000)
    assert bool(torch.all(r.x >= 0)) and abs(float(r.x.sum()) - 1.0) < 1e-12
    assert r.final["stationarity"] < r.history[0]["stationarity"] / 5


def test_dual_safeguard_fires_and_bounds_y():
    p = nonconvex_qp(dim=20, constraints=5, seed=0)
    free = solve(p, "ssl_alm", samples=2000, log_every=2000, M_y=None)
    assert free.final["y_norm"] > 1.0  # the multiplier wants to be larger than the bound below
    opt = make_optimizer(p, "ssl_alm", 2000, M_y=1.0)
    for _ in range(2000):
        opt.step()
        assert float(torch.linalg.vector_norm(opt.y)) < 1.0
    assert opt.safeguard_resets > 0


def test_storm_estimator_is_unbiased():
    p = nonconvex_qp(dim=8, constraints=2, noise=0.5, seed=3)
    gen = torch.Generator().manual_seed(0)
    x_old, x_new = torch.rand(8, generator=gen, dtype=DT), torch.rand(8, generator=gen, dtype=DT)
    d_old = p.full_grad(x_old)  # an unbiased d_t (here exact) must give an unbiased d_{t+1}
    draws = []
    for _ in range(20_000):
        xi = p.draw_xi(gen)
        draws.append(storm_direction(d_old, p.grad(x_new, xi), p.grad(x_old, xi), alpha=0.1))
    draws = torch.stack(draws)
    err = draws.mean(0) - p.full_grad(x_new)
    stderr = draws.std(0) / len(draws) ** 0.5
    assert bool(torch.all(err.abs() < 5 * stderr)), (err, stderr)
    # and the estimator's spread is far below that of a plain stochastic gradient at x_new
    plain = torch.stack([p.grad(x_new, p.draw_xi(gen)) for _ in range(2000)])
    assert float(draws.var(0).sum()) < 0.5 * float(plain.var(0).sum())


def test_closed_form_gradients_match_autograd():
    gen = torch.Generator().manual_seed(0)
    for p in (nonconvex_qp(dim=6, constraints=2), fair_logistic(n=50, dim=4, batch=5)):
        x = 0.3 * torch.randn(p.dim, generator=gen, dtype=DT)
        xi = p.draw_xi(gen)
        assert torch.allclose(p.grad(x, xi), p._grad(lambda v: p.objective(v, xi), x), atol=1e-12)
        assert torch.allclose(p.full_grad(x), p._grad(p.full_objective, x), atol=1e-12)


def test_slack_reformulation_agrees_with_direct_projection():
    """min ||x - c||^2 s.t. sum x = 1 over x >= 0 (projected) and over {-x <= 0} (slack): both are the
    Euclidean projection of c onto the simplex."""
    c = torch.tensor([0.9, 0.4, -0.3, 0.2], dtype=DT)
    expected = Simplex().project(c)
    ones, one = torch.ones(1, 4, dtype=DT), torch.ones(1, dtype=DT)
    kw = dict(objective=lambda x, xi: ((x - c) ** 2).sum(), gradient=lambda x, xi: 2 * (x - c), dim=4, A=ones,
              b=one, smoothness=2.0)
    direct = ConstrainedProblem(X=NonNegative(), **kw)
    slack = ConstrainedProblem(X=Polyhedron(-torch.eye(4), torch.zeros(4)), **kw)
    assert slack.size == 8 and slack.A.shape == (5, 8)
    for p in (direct, slack):
        r = solve(p, "prox_alm", samples=4000, log_every=4000)
        assert torch.allclose(r.x, expected, atol=1e-6), (p.slack, r.x)
        assert r.final["infeasibility"] < 1e-8  # for the slack problem: sum x = 1 and w = x


def test_sampled_constraint_problem_is_unbiased_and_solved():
    p = sampled_constraint_qp(dim=10, constraints=3, constraint_noise=0.3, seed=1)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10, generator=gen, dtype=DT)
    mean = torch.stack([p.residual(x, p.draw_zeta(gen)) for _ in range(4000)]).mean(0)
    assert torch.allclose(mean, p.residual(x), atol=0.03)
    r = solve(p, "ssl_alm", samples=3000, seed=0, log_every=1000)
    assert r.final["constraint_samples"] == 2 * 3000
    assert r.final["infeasibility"] < 0.02 and r.final["stationarity"] < 0.1 < r.history[0]["stationarity"]


def test_mean_constraint_is_estimated_when_not_given():
    A = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=DT)
    p = ConstrainedProblem(lambda x, xi: x @ x, 2, residual=lambda x, zeta: (A + zeta) @ x - zeta.sum(1),
                sample_zeta=lambda g: 0.1 * torch.randn(2, 2, generator=g, dtype=DT))
    assert torch.allclose(p.A, A, atol=0.02) and torch.allclose(p.b, torch.zeros(2, dtype=DT), atol=0.02)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_checkpoint_then_resume_is_bit_exact(method):
    p = sampled_constraint_qp(dim=6, constraints=2, seed=0)
    full = make_optimizer(p, method, 400, seed=5)
    for _ in range(full.T):
        full.step()
    first = make_optimizer(p, method, 400, seed=5)
    for _ in range(full.T // 2):
        first.step()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # what a checkpoint or a move to another process does
    second = make_optimizer(p, method, 400, seed=99)  # a different seed: the loaded RNG state must win
    second.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    while not second.done:
        second.step()
    for name in ("x", "z", "y"):
        assert torch.equal(getattr(full, name), getattr(second, name)), name
    assert full.samples == second.samples and full.constraint_samples == second.constraint_samples


def test_bad_input_gives_clear_errors():
    p = nonconvex_qp(dim=5, constraints=2)
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        solve(p, "adam")
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'"):
        solve(p, "ssl_alm", samples=10, lr=0.1)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        solve(p, "ssl_alm", samples=0)
    with pytest.raises(ValueError, match="tau must be non-negative"):
        solve(p, "ssl_alm", samples=10, tau=-1.0)
    with pytest.raises(ValueError, match="z_update"):
        solve(p, "ssl_alm", samples=10, z_update="mid")
    with pytest.raises(ValueError, match="A must be"):
        ConstrainedProblem(lambda x, xi: x @ x, 3, A=torch.ones(1, 2), b=torch.ones(1))
    with pytest.raises(ValueError, match="lower must not exceed upper"):
        Box(1.0, 0.0)
    with pytest.raises(ValueError, match="constraints must be between"):
        nonconvex_qp(dim=5, constraints=5)


def test_importing_the_core_does_not_import_ray():
    code = "import sys, raylab.constrained; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fair_logistic_closes_the_score_gap():
    p = fair_logistic(n=500, dim=6, seed=0)
    exact = solve(p, "prox_alm", samples=3000, log_every=3000)
    assert exact.final["infeasibility"] < 1e-9 and exact.final["kkt"] < 1e-8
    unconstrained_gap = abs(float(p.A @ solve(p, "prox_alm", samples=3000, log_every=3000, M_y=None, eta=0.0,
                                                rho=0.0).x))
    r = solve(p, "ssl_alm", samples=4000, seed=0, log_every=4000)
    assert r.final["infeasibility"] < 0.1 * unconstrained_gap
    assert abs(r.final["objective"] - exact.final["objective"]) < 0.05
