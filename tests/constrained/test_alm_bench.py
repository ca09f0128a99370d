"""raylab bench alm: its pieces work (the measured figures come from running the benchmark, not from tests)."""
import math

import pytest

from raylab.bench.alm import CHECK_RATIO, check_points, grids, samples_to_eps


def test_check_points_are_geometric_and_end_at_the_budget():
    points = check_points(5000)
    assert points[0] == 200 and points[-1] == 5000
    assert all(b / a == pytest.approx(CHECK_RATIO, abs=0.01) for a, b in zip(points[:-2], points[1:-1]))


def test_every_contender_runs_and_the_hold_rule_applies():
    grid = grids(400, quick=True)
    assert set(grid) == {"ssl_alm", "storm_alm", "penalty", "sgda", "cooper_alm"}
    for name, hypers in grid.items():
        # the start already has stationarity ~3: eps = 10 holds from the first check on
        assert samples_to_eps(name, hypers[0], 400, 0, eps=10.0) in (200, 201), name  # STORM counts in pairs
    assert math.isinf(samples_to_eps("cooper_alm", grid["cooper_alm"][0], 250, 0, eps=1e-9))
