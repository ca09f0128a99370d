"""raylab bench alm: its pieces work (the measured figures come from running the benchmark, not from tests)."""
import math
import statistics

import pytest

from raylab.bench.alm import CHECK_RATIO, check_points, cooper_gap, grids, samples_to_eps, tune


def test_check_points_are_geometric_and_end_at_the_budget():
    points = check_points(5000)
    assert points[0] == 200 and points[-1] == 5000
    assert all(b / a == pytest.approx(CHECK_RATIO, abs=0.01) for a, b in zip(points[:-2], points[1:-1]))


def test_every_contender_runs_and_the_hold_rule_applies():
    grid = grids(quick=True)
    assert set(grid) == {"ssl_alm", "storm_alm", "penalty", "sgda", "cooper_alm"}
    for name, hypers in grid.items():
        # the start already has stationarity ~3: eps = 10 holds from the first check on
        assert samples_to_eps(name, hypers[0], 400, 0, eps=10.0) in (200, 201), name  # STORM counts in pairs
    assert math.isinf(samples_to_eps("cooper_alm", grid["cooper_alm"][0], 250, 0, eps=1e-9))


def test_cooper_step_is_coopers_update():
    for hyper in grids(quick=False)["cooper_alm"][::9]:
        assert cooper_gap(hyper, 60, seed=1) < 1e-12


def test_cutoff_is_exact_and_tune_matches_running_everything():
    hypers = grids(quick=False)["penalty"][:4]
    eps, budget = 0.3, 3000
    full = {i: [samples_to_eps("penalty", h, budget, s, eps) for s in range(3)] for i, h in enumerate(hypers)}
    n = full[0][0]
    assert samples_to_eps("penalty", hypers[0], budget, 0, eps, cutoff=n + 1) == n
    assert math.isinf(samples_to_eps("penalty", hypers[0], budget, 0, eps, cutoff=n))
    medians = [statistics.median_high(v) for v in full.values()]
    best, best_n = tune("penalty", hypers, budget, 3, eps)
    assert best_n == min(medians) and best is hypers[medians.index(min(medians))]


def test_the_wide_alm_grid_scales_each_hyper_parameter_on_its_own():
    import raylab.bench.alm as bench
    from raylab.constrained import make_optimizer, nonconvex_qp

    wide = bench.grids(False, wide_alm=True)
    base = make_optimizer(nonconvex_qp(**bench.PROBLEM), "storm_alm", bench.ALM_HORIZON).hyper
    for name in ("ssl_alm", "storm_alm"):
        points = {tuple(sorted(h.items())) for h in wide[name]}
        assert len(points) == len(wide[name]) == 4 * 3 * 3 * 3
    assert all(h["alpha"] == base["alpha"] for h in wide["storm_alm"])
    assert sorted({round(h["tau"] / base["tau"], 9) for h in wide["storm_alm"]}) == [1, 3, 9, 27]
    assert wide["penalty"] == bench.grids(False)["penalty"]  # the baselines are untouched
