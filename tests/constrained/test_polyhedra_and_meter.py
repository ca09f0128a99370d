"""Issue 14's defects: the stationarity meter at exact KKT points (Hock-Schittkowski 44 and 35, a convex QP solved
by scipy), its unconverged warning, safe default steps on HS44 posed as a polyhedron, one-line errors for
non-finite iterates, polyhedra with bounds, and the three sample counts."""
import math

import numpy as np
import pytest
import torch

from raylab.constrained import (
    ConstrainedProblem,
    NonFiniteIterate,
    Polyhedron,
    StationarityMeter,
    hs35,
    hs44,
    make_optimizer,
    sampled_constraint_qp,
    solve,
)

DT = torch.float64
HS44_KKT = ([0.0, 3.0, 0.0, 4.0], [3.0, 0.0, 4.0, 0.0])  # F = -15 (global) and -13


@pytest.mark.parametrize("bounds_in_H", [False, True])
def test_meter_is_zero_at_the_kkt_points_of_hs44(bounds_in_H):
    p = hs44(bounds_in_H=bounds_in_H)
    assert p.slack == (10 if bounds_in_H else 6)
    meter = StationarityMeter(p)
    for x in HS44_KKT:
        assert meter(p.lift(torch.tensor(x, dtype=DT))) < 1e-5 and meter.converged
    assert meter(p.lift(torch.ones(4, dtype=DT))) > 0.5  # an interior point is far from stationary
    assert p.value(torch.tensor(HS44_KKT[0], dtype=DT)) == -15.0


def test_meter_is_zero_at_the_solution_of_hs35():
    p = hs35()
    assert StationarityMeter(p)(p.lift(torch.tensor([4 / 3, 7 / 9, 4 / 9], dtype=DT))) < 1e-5


def convex_qp(seed: int = 0):
    """A random strongly convex QP with 2 equality rows, 3 inequality rows and bounds [0, 2]."""
    rng = np.random.default_rng(seed)
    n = 6
    B = rng.standard_normal((n, n))
    Q, c = B @ B.T / n + 0.1 * np.eye(n), rng.standard_normal(n)
    A, H = rng.standard_normal((2, n)), rng.standard_normal((3, n))
    x_feas = rng.uniform(0.3, 1.0, n)
    return Q, c, A, A @ x_feas, H, H @ x_feas + 0.1


def scipy_prox_point(Q, c, A, b, H, h, mu, z):
    """argmin 1/2 x'Qx + c'x + mu/2 ||x - z||^2 s.t. Ax = b, Hx <= h, 0 <= x <= 2, by scipy's trust-constr."""
    from scipy.optimize import Bounds, LinearConstraint, minimize

    n = len(c)
    res = minimize(lambda x: 0.5 * x @ Q @ x + c @ x + mu / 2 * (x - z) @ (x - z), np.full(n, 0.5),
                   jac=lambda x: Q @ x + c + mu * (x - z), hess=lambda x: Q + mu * np.eye(n), method="trust-constr",
                   constraints=[LinearConstraint(A, b, b), LinearConstraint(H, -np.inf, h)],
                   bounds=Bounds(np.zeros(n), np.full(n, 2.0)), options={"gtol": 1e-12, "xtol": 1e-14,
                                                                          "maxiter": 5000})
    return res.x


def test_meter_matches_scipy_on_a_convex_qp_with_a_polyhedron_and_bounds():
    Q, c, A, b, H, h = convex_qp()
    t = lambda a: torch.tensor(a, dtype=DT)  # noqa: E731
    Qt, ct = t(Q), t(c)
    p = ConstrainedProblem(lambda x, xi: 0.5 * x @ Qt @ x + ct @ x, 6, gradient=lambda x, xi: Qt @ x + ct,
                           X=Polyhedron(t(H), t(h), lower=0.0, upper=2.0), A=t(A), b=t(b),
                           smoothness=float(np.linalg.eigvalsh(Q).max()))
    meter = StationarityMeter(p, mu=1.0)
    x_star = scipy_prox_point(Q, c, A, b, H, h, 0.0, np.zeros(6))  # the QP's own solution (mu = 0)
    assert meter(p.lift(t(x_star))) < 1e-5
    z = np.linspace(-0.5, 2.5, 6)  # outside the bounds (not lifted, which would project it)
    u = torch.cat([t(z), torch.zeros(3, dtype=DT)])
    expected = scipy_prox_point(Q, c, A, b, H, h, 1.0, z)
    got = meter.prox_point(u)[:6].numpy()
    assert np.abs(got - expected).max() < 1e-5
    assert meter(u) == pytest.approx(float(np.linalg.norm(z - expected)), abs=1e-5)


def test_meter_warns_in_one_line_when_it_stops_unconverged():
    p = hs44(bounds_in_H=True)
    meter = StationarityMeter(p, max_outer=2, max_inner=5)
    with pytest.warns(RuntimeWarning, match=r"stopped unconverged after 2 outer iterations") as record:
        meter(p.lift(torch.ones(4, dtype=DT)))
    assert not meter.converged and "\n" not in str(record[0].message)


@pytest.mark.parametrize("bounds_in_H", [False, True])
@pytest.mark.parametrize("method", ["ssl_alm", "storm_alm", "prox_alm", "penalty"])
def test_default_steps_are_stable_on_hs44_as_a_polyhedron(method, bounds_in_H):
    p = hs44(bounds_in_H=bounds_in_H, noise=0.1)
    r = solve(p, method, samples=4000, seed=0, log_every=1000)
    x = r.x
    assert bool(torch.isfinite(x).all()) and float(x.norm()) < 10, (method, x)
    assert float((p.H @ x - p.h).max()) < 0.1  # close to the polyhedron
    assert r.final["objective"] <= r.history[0]["objective"] + 1e-9  # and no worse than where it started


def test_defaults_put_prox_alm_at_a_kkt_point_of_hs44():
    r = solve(hs44(), "prox_alm", samples=5000, log_every=5000)
    assert r.final["stationarity"] < 1e-4
    assert min(float((r.x - torch.tensor(k, dtype=DT)).norm()) for k in HS44_KKT) < 1e-3


def test_a_polyhedron_with_bounds_needs_no_bound_rows():
    """HS35 with x >= 0 projected onto, against the same problem with x >= 0 as three more rows of H."""
    folded = hs35()
    H = torch.cat([folded.H, -torch.eye(3, dtype=DT)])
    rows = ConstrainedProblem(folded.objective, 3, gradient=folded._gradient, full_objective=folded.full_objective,
                              X=Polyhedron(H, torch.cat([folded.h, torch.zeros(3, dtype=DT)])),
                              A=torch.zeros(0, 3, dtype=DT), b=torch.zeros(0, dtype=DT), smoothness=folded.smoothness)
    assert folded.slack == 1 and rows.slack == 4
    for p in (folded, rows):
        r = solve(p, "prox_alm", samples=5000, log_every=5000)
        assert torch.allclose(r.x, torch.tensor([4 / 3, 7 / 9, 4 / 9], dtype=DT), atol=1e-4), (p.slack, r.x)
        assert bool((r.x >= -1e-12).all())


def test_stationarity_is_measured_in_the_users_variables():
    """The slack of the measured point does not change the value: only x carries the proximal term."""
    p = hs44()
    meter = StationarityMeter(p)
    u = p.lift(torch.tensor([1.0, 0.5, 0.5, 1.0], dtype=DT))
    shifted = u.clone()
    shifted[4:] += 0.7
    assert meter(u) == pytest.approx(StationarityMeter(p)(shifted), abs=1e-6)


def test_solve_stops_with_one_line_when_an_iterate_turns_nonfinite():
    p = hs44(bounds_in_H=True)  # x is free: nothing projects a runaway iterate back
    with pytest.raises(NonFiniteIterate, match=r"ssl_alm: the iterate turned non-finite at iteration \d+") as err:
        solve(p, "ssl_alm", samples=2000, tau=10.0, log_every=100)
    assert isinstance(err.value, FloatingPointError) and "\n" not in str(err.value)


def test_three_sample_counts_are_reported_separately():
    p = sampled_constraint_qp(dim=6, constraints=2, seed=0)
    ssl = solve(p, "ssl_alm", samples=300, log_every=300).final
    assert (ssl["samples"], ssl["oracle_calls"], ssl["constraint_samples"]) == (300, 300, 600)
    storm = make_optimizer(p, "storm_alm", 300)
    while not storm.done:
        storm.step()
    n = storm.initial_batch(storm.T)  # N single calls, then one xi at two points per iteration
    assert (storm.samples, storm.oracle_calls, storm.constraint_samples) == (n + 2 * storm.T, n + storm.T,
                                                                             2 * storm.T)
    assert storm.samples <= 300 and math.isfinite(float(storm.x.norm()))
