"""raylab bench alm: its pieces work (the measured figures come from running the benchmark, not from tests)."""
import math

import pytest

from raylab.bench.alm import CHECK_RATIO, HOLD, QP, check_points, cooper_gap, grids, instance, measure, trajectories
from raylab.constrained import nonconvex_qp, samples_to_reach


def test_check_points_are_geometric_and_end_at_the_cap():
    points = check_points(5000)
    assert points[0] == 200 and points[-1] == 5000
    assert all(b / a == pytest.approx(CHECK_RATIO, abs=0.01) for a, b in zip(points[:-2], points[1:-1]))


def test_grids_have_the_sizes_the_protocol_promises():
    sizes = {name: len(points) for name, points in grids(instance("stochastic")[0]).items()}
    assert sizes["ssl_alm"] >= 24 and sizes["storm_alm"] >= 24 and sizes["penalty"] == 36
    storm = grids(instance("stochastic")[0])["storm_alm"]
    assert len({h["alpha"] for h in storm}) == 2  # STORM's alpha is tuned
    assert {h["power"] for h in grids(instance("stochastic")[0])["penalty"]} >= {1.5}


def test_cooper_step_is_coopers_update():
    for hyper in grids(nonconvex_qp(**QP))["cooper_alm"][::9]:
        assert cooper_gap(hyper, 60, seed=1) < 1e-12


def test_early_stopping_is_exact():
    """The cutoff drops runs mid-way; the picks and every recorded reach equal those of full runs."""
    hypers = grids(instance("stochastic")[0])["ssl_alm"][:6]
    eps, cap = (0.3, 0.1), 6000
    checks = check_points(cap)
    full = trajectories("ssl_alm", "stochastic", hypers, [0, 1, 2], cap, {i: () for i in range(6)}, cutoff=False)
    cut = trajectories("ssl_alm", "stochastic", hypers, [0, 1, 2], cap, {i: eps for i in range(6)}, cutoff=True)
    assert all(math.isfinite(v) for row in full for v in row)  # eps () never stops a run
    assert any(math.isnan(row[-1]) for row in cut)  # some runs stopped early
    for e in eps:
        def medians(values):
            return [sorted(samples_to_reach(checks, values[3 * i + j], e, HOLD) for j in range(3))[1]
                    for i in range(6)]
        exact, early = medians(full), medians(cut)
        assert min(early) == min(exact) and early.index(min(early)) == exact.index(min(exact))


def test_quick_measure_reports_the_three_counts():
    out = measure("storm_alm", "stochastic", quick=True)
    assert set(out) == {"0.1", "0.03", "0.01"}
    r = out["0.1"]
    assert r["grid_points"] == 1 and r["fresh_reached"] == 2
    assert r["oracle_calls"] < r["samples"] and r["constraint_samples"] == pytest.approx(2 * (r["samples"] -
                                                                                           r["oracle_calls"]))
