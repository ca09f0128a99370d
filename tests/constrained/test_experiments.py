"""The `constrained` and `alm_rates` experiments: actor == local, resume through run(), the YAMLs load."""
import json
from pathlib import Path

import pytest
import torch

from raylab.config import load_config
from raylab.constrained.actors import MethodWorker
from raylab.driver import execute, prepare_run_dir
from raylab.experiments import constrained

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["samples=600", "log_points=6", "problem.dim=8", "problem.constraints=2", "progress=false"]


def small_config(tmp_path, *extra):
    return load_config(ROOT / "experiments/alm_ncqp.yaml", [*SMALL, f"output_dir={tmp_path}", *extra])


@pytest.mark.ray
def test_actor_rows_equal_local_rows(ray_local, tmp_path):
    cfg = small_config(tmp_path, "methods=[ssl_alm,storm_alm,penalty]")
    run_dir, _ = prepare_run_dir(cfg, None)
    execute(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(cfg.log_points + 1))
    for method in cfg.methods:
        local = MethodWorker(cfg.problem.spec(), method, cfg.samples, cfg.seed, constrained.method_hyper(cfg, method),
                             cfg.log_points)
        for k, row in enumerate(rows):
            expected = local.advance(k)
            assert {key: row[f"{method}_{key}"] for key in constrained.ROW_KEYS} == {
                key: expected[key] for key in constrained.ROW_KEYS}, (method, k)
    assert (run_dir / "stationarity.png").exists() and (run_dir / "infeasibility.png").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_resume_through_run_reproduces_the_uninterrupted_run(ray_local, tmp_path):
    cfg = small_config(tmp_path, "checkpoint_every=3", "methods=[storm_alm]")  # STORM carries the most state
    run_dir, _ = prepare_run_dir(cfg, None)
    full = execute(cfg, run_dir)
    ckpts = run_dir / "checkpoints"
    full_metrics = (run_dir / "metrics.jsonl").read_text()
    final = ckpts / "ckpt-000000006.pt"
    full_state = torch.load(final, weights_only=False)["state"]
    # a crash right after the checkpoint at log step 3: the final checkpoint never got written
    final.unlink()
    (ckpts / "latest").write_text("ckpt-000000003.pt")
    resumed = execute(cfg, run_dir, resume=True)
    assert resumed == full
    assert (run_dir / "metrics.jsonl").read_text() == full_metrics
    state = torch.load(final, weights_only=False)["state"]
    for key in ("x", "z", "y", "d", "rng"):
        assert torch.equal(full_state["storm_alm"]["opt"][key], state["storm_alm"]["opt"][key]), key


def test_method_hyper_routes_each_block():
    cfg = load_config(ROOT / "experiments/alm_ncqp.yaml", ["alm.tau=0.01", "alm.alpha=0.1", "sgda.eta=0.3"])
    assert constrained.method_hyper(cfg, "ssl_alm") == {"tau": 0.01}
    assert constrained.method_hyper(cfg, "storm_alm") == {"tau": 0.01, "alpha": 0.1}
    assert constrained.method_hyper(cfg, "sgda") == {"eta": 0.3}
    assert constrained.method_hyper(cfg, "penalty") == {}


@pytest.mark.parametrize("override, key", [
    ("alm.beta=2", "alm.beta"), ("methods=[adam]", "methods.0"), ("samples=0", "samples"),
    ("problem.kind=lasso", "problem.kind"), ("alm.lr=0.1", "alm.lr"), ("problem.X=ball", "problem.X")])
def test_bad_overrides_name_the_key(override, key):
    from raylab.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(ROOT / "experiments/alm_ncqp.yaml", [override])


def test_rate_fit_is_exact_on_a_power_law():
    from raylab.constrained import fit_exponent

    budgets = [1000, 2000, 4000, 8000]
    eps = [0.5 * t ** -0.25 for t in budgets]  # T ~ eps^-4 exactly
    assert fit_exponent(budgets, eps) == pytest.approx(4.0)


def test_samples_to_reach_needs_a_streak_of_hold_checks():
    from raylab.constrained import samples_to_reach

    samples, values = [100, 200, 300, 400, 500, 600], [0.5, 0.05, 0.2, 0.08, 0.09, 0.07]
    assert samples_to_reach(samples, values, 0.1, hold=1) == 200
    assert samples_to_reach(samples, values, 0.1, hold=3) == 400  # 200 starts a streak that 300 breaks
    assert samples_to_reach(samples, values, 0.1, hold=4) == float("inf")
    assert samples_to_reach(samples, [float("nan")] * 6, 1.0, hold=1) == float("inf")


def test_constraints_must_be_below_dim_before_anything_is_written(tmp_path):
    from raylab.config import ConfigError

    message = r"alm_ncqp\.yaml: problem\.constraints: must be below problem\.dim for a QP \(got 40 >= 20\)$"
    with pytest.raises(ConfigError, match=message):
        small_config(tmp_path, "problem.constraints=40", "problem.dim=20")
    assert not any(tmp_path.iterdir())
    assert load_config(ROOT / "experiments/alm_ncqp.yaml", ["penalty.power=1.5"]).penalty.power == 1.5


@pytest.mark.ray
def test_alm_rates_runs_end_to_end(ray_local, tmp_path):
    cfg = load_config(ROOT / "experiments/alm_rates.yaml", [
        "budgets=[100,200]", "seeds=1", "methods=[ssl_alm]", "problem.dim=8", "problem.constraints=2",
        "progress=false", f"output_dir={tmp_path}"])
    run_dir, _ = prepare_run_dir(cfg, None)
    summary = execute(cfg, run_dir)
    assert len(summary["ssl_alm_eps"]) == 2 and all(e > 0 for e in summary["ssl_alm_eps"])
    assert "ssl_alm_exponent" in summary and (run_dir / "rates.png").exists()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.ray
def test_a_diverging_method_ends_the_run_as_diverged(ray_local, tmp_path):
    from raylab.results import Diverged

    cfg = small_config(tmp_path, "problem.kind=hs44", "problem.bounds_in_H=true", "methods=[ssl_alm,penalty]",
                       "alm.tau=10")
    run_dir, _ = prepare_run_dir(cfg, None)
    with pytest.raises(Diverged, match=r"diverged at log point \d+ \(ssl_alm_objective is nan\)"):
        execute(cfg, run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    assert (run_dir / "stationarity.png").exists()
