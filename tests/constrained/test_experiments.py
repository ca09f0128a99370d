"""The `constrained` and `alm_rates` experiments: actor == local, resume through run(), the YAMLs load."""
import json
from pathlib import Path

import pytest
import torch

from raylab.config import load_config
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
        local = constrained.MethodWorker(cfg.problem.model_dump(), method, cfg.samples, cfg.seed,
                                         constrained.method_hyper(cfg, method), cfg.log_points)
        for k, row in enumerate(rows):
            expected = local.advance(k)
            assert {key: row[f"{method}_{key}"] for key in constrained.ROW_KEYS} == {
                key: expected[key] for key in constrained.ROW_KEYS}, (method, k)
    assert (run_dir / "stationarity.png").exists() and (run_dir / "infeasibility.png").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_resume_through_run_reproduces_the_uninterrupted_run(ray_local, tmp_path):
    cfg = small_config(tmp_path, "checkpoint_every=3", "methods=[storm_alm]")  # STORM carries the most state
    full_dir, _ = prepare_run_dir(cfg, None)
    full = execute(cfg, full_dir)
    crashed_dir, _ = prepare_run_dir(cfg, None)
    execute(cfg, crashed_dir)
    # a crash right after the checkpoint at log step 3: the final checkpoint never got written
    ckpts = crashed_dir / "checkpoints"
    (ckpts / "ckpt-000000006.pt").unlink()
    (ckpts / "latest").write_text("ckpt-000000003.pt")
    resumed = execute(cfg, crashed_dir, resume=True)
    assert resumed == full
    assert (crashed_dir / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()
    a = torch.load(full_dir / "checkpoints/ckpt-000000006.pt", weights_only=False)["state"]
    b = torch.load(crashed_dir / "checkpoints/ckpt-000000006.pt", weights_only=False)["state"]
    for method in cfg.methods:
        for key in ("x", "z", "y"):
            assert torch.equal(a[method]["opt"][key], b[method]["opt"][key])


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
