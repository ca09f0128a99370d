"""raylab bench alm: its pieces work (the measured figures come from running the benchmark, not from tests)."""
import math
import os
import subprocess
import sys

import pytest

from raylab.bench.alm import (
    CHECK_FIRST,
    CHECK_RATIO,
    HOLD,
    QP,
    WORKER_NICENESS,
    check_points,
    cooper_gap,
    grids,
    instance,
    measure,
    on_edge,
    target_check,
    trajectories,
)
from raylab.constrained import nonconvex_qp, samples_to_reach


def test_check_points_are_geometric_and_end_at_the_cap():
    points = check_points(5000)
    assert points[0] == CHECK_FIRST and points[-1] == 5000
    assert all(abs(p - CHECK_FIRST * CHECK_RATIO ** i) < 1 for i, p in enumerate(points[:-1]))
    assert all(a < b for a, b in zip(points, points[1:]))


def test_grids_have_the_sizes_the_protocol_promises():
    sizes = {name: len(points) for name, points in grids(instance("stochastic")[0]).items()}
    assert sizes == {"ssl_alm": 112, "storm_alm": 875, "penalty": 81, "sgda": 20, "cooper_alm": 168}
    storm = grids(instance("stochastic")[0])["storm_alm"]
    assert len({h["alpha"] for h in storm}) == 5  # STORM's alpha is tuned
    penalty = grids(instance("stochastic")[0])["penalty"]
    assert {h["decay"] for h in penalty} == {0.5, 0.75, 1.0} and {h["average"] for h in penalty} == {8.0}


def test_cooper_step_is_coopers_update():
    for hyper in grids(nonconvex_qp(**QP))["cooper_alm"][::9]:
        assert cooper_gap(hyper, 60, seed=1) < 1e-12


def test_early_stopping_is_exact():
    """The cutoff drops runs mid-way; the picks and every recorded reach equal those of full runs."""
    hypers = grids(instance("stochastic")[0])["ssl_alm"][56:62]  # step scale 3, beta ratios 1 and 3
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
    assert set(out) == {"0.1", "0.03", "0.01", "cpu_s"} and out["cpu_s"] > 0
    r = out["0.1"]
    assert r["grid_points"] == 1 and r["fresh_reached"] == 2
    assert r["oracle_calls"] < r["samples"] and r["constraint_samples"] == pytest.approx(2 * (r["samples"] -
                                                                                           r["oracle_calls"]))


@pytest.mark.ray
@pytest.mark.slow
def test_local_ray_workers_run_at_normal_priority(tmp_path):
    """Without --address the bench's local Ray instance starts its workers at niceness 0, not Ray's 15."""
    script = ("import os, ray\n"
              "from raylab.bench.alm import workers_at_normal_priority\n"
              "assert workers_at_normal_priority(None) == '0'\n"
              "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
              "print('niceness', ray.get(ray.remote(lambda: os.nice(0)).remote()) - os.nice(0))\n"
              "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != WORKER_NICENESS}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert "niceness 0" in out.stdout, out.stderr[-2000:]


def test_target_check_reads_the_measured_ratios():
    lines = target_check({0.1: (0.5, False), 0.03: (12.0, False), 0.01: (40.0, True)})
    assert lines == ["ratio >= 10 at eps 0.03: met (12.00)",
                     "ratio >= 30 at eps 0.01: met (> 40.0 (no baseline within the cap))",
                     "ratio rising as eps shrinks (0.1, 0.03, 0.01): met"]
    lines = target_check({0.1: (2.0, False), 0.03: (1.5, False), 0.01: (7.4, True)})
    assert lines[0].startswith("ratio >= 10 at eps 0.03: not met") and "not shown" in lines[1]
    assert lines[2].endswith("not met")  # 2.0 -> 1.5 falls
    assert target_check({0.1: (2.0, False), 0.03: (70.0, True), 0.01: (7.4, True)})[2].endswith(
        "not shown (a ratio before the last is only a lower bound)")


def test_on_edge_names_the_axes_at_a_grids_ends():
    assert on_edge("ssl_alm", 0) == "scale highest, beta lowest, rho lowest"  # the grid's first point
    assert on_edge("penalty", len(grids(instance("stochastic")[0])["penalty"]) // 2) == ""  # its middle point
    cooper = grids(nonconvex_qp(**QP))["cooper_alm"]
    assert on_edge("cooper_alm", len(cooper) - 1) == "rho highest, lr highest, dual_lr highest"
