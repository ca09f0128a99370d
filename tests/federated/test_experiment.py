"""The federated experiment without Ray: config errors, resume after an interruption, plots and the table."""
import json

import numpy as np
import pytest
import torch
import yaml

from raylab import driver
from raylab.cli import main
from raylab.config import load_config
from raylab.federated import ArrayData, simulate
from raylab.results import RunContext, read_metrics

SMALL = {"experiment": "federated", "rounds": 20, "eval_every": 5, "checkpoint_every": 5, "dtype": "float64",
         "data": {"kind": "digits", "num_agents": 24, "alpha": 0.3}, "availability": {"kind": "markov", "p": 0.3},
         "alm": {"tau": 0.2, "rho": 0.4, "eta": 0.05, "server_lr_scale": 0.05}, "single_process": True,
         "progress": False}


def config_file(tmp_path, **extra):
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(tmp_path / "runs"), **extra}))
    return path


@pytest.mark.parametrize("override, message", [
    ("availability.p=0", "availability.p: Input should be greater than 0 (got 0)"),
    ("availability.p=1.5", "availability.p: Input should be less than or equal to 1 (got 1.5)"),
    ("data.num_agents=0", "data.num_agents: Input should be greater than or equal to 1 (got 0)"),
    ("data.kind=mnist",
     "data.kind: Input should be 'digits', 'least_squares', 'synthetic', 'arrays' or 'dataset' (got 'mnist')"),
    ("model.name=least_squares", "model: least_squares needs real-valued targets"),
    ("availability.kind=markov availability.p=0.9 availability.mean_on=2", "needs mean_on >= p / (1 - p) = 9"),
    ("methods=[ssl_alm,fedsgd]",
     "methods.1: Input should be 'ssl_alm', 'fedavg', 'fedprox' or 'scaffold' (got 'fedsgd')"),
    ("data.kind=synthetic data.num_agents=1000000000000", "data.num_agents: needs about"),
    ("data.kind=arrays data.path=/nonexistent.npz", "data.path: no such file '/nonexistent.npz'"),
    ("alm.fresh_rho_draw=true", "fresh_rho_draw: needs residual: unbiased"),
    ("baselines.weighting=size", "baselines.weighting: Input should be 'uniform' or 'samples'"),
    ("alm.eta=-1", "alm.eta: Input should be greater than 0"),
])
def test_bad_configs_fail_with_one_line_naming_the_key(tmp_path, capsys, override, message):
    code = main(["check", str(config_file(tmp_path)), *override.split()])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_shipped_experiments_validate():
    for name in ("federated_alm", "federated_digits", "federated_sweep"):
        cfg = load_config(f"experiments/{name}.yaml")
        assert cfg.problem().num_agents >= 100
    assert load_config("experiments/federated_alm.yaml").availability.p == 0.1


def final_models(run_dir):
    step, state = RunContext(run_dir, resume=True).resume()
    return step, {m: s["x0"] for m, s in state["server"].items()}, state["agents"]["methods"]


class Interrupted(RunContext):
    """A run stopped by Ctrl-C right after it logged round 15 (its last checkpoint is round 10)."""

    def log(self, metrics, step, allow_nonfinite=()):
        super().log(metrics, step, allow_nonfinite)
        if step == 15:
            raise KeyboardInterrupt


@pytest.mark.parametrize("shard_checkpoints", [False, True])
def test_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path, shard_checkpoints):
    # the checkpoint path is the same with or without actors; shard_checkpoints: the shards write their files
    cfg = load_config(config_file(tmp_path, shard_checkpoints=shard_checkpoints))
    full_dir, _ = driver.prepare_run_dir(cfg, None)
    full = driver.execute(cfg, full_dir)
    run_dir, _ = driver.prepare_run_dir(cfg, None)
    with pytest.raises(KeyboardInterrupt):
        driver.experiment_module(cfg.experiment).run(
            cfg, Interrupted(run_dir, checkpoint_every=cfg.checkpoint_every, progress=False))
    assert [r["step"] for r in read_metrics(run_dir)] == [5, 10, 15]
    resumed = driver.execute(cfg, run_dir, resume=True)
    assert read_metrics(run_dir) == read_metrics(full_dir)
    drop = ("seconds",)
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}
    if shard_checkpoints:
        step, state = RunContext(run_dir, resume=True).resume()
        assert step == 20 and sorted(state["agents"]["files"]) == ["round-000000020-shard-0000.pt"]
        assert sorted(p.name for p in (run_dir / "checkpoints" / "shards").iterdir()) == [
            "round-000000015-shard-0000.pt", "round-000000020-shard-0000.pt"]
        return
    for m, x0 in final_models(full_dir)[1].items():
        assert torch.equal(x0, final_models(run_dir)[1][m])


def test_the_run_writes_plots_and_prints_a_table(tmp_path, capsys):
    cfg = load_config(config_file(tmp_path, rounds=10, methods=["ssl_alm", "fedavg", "fedprox", "scaffold"]))
    run_dir, _ = driver.prepare_run_dir(cfg, None)
    summary = driver.execute(cfg, run_dir)
    out = capsys.readouterr().out
    assert all(label in out for label in ("SSL-ALM", "FedAvg", "FedProx", "SCAFFOLD", "accuracy"))
    for name in ("overview", "accuracy", "objective", "stationarity", "consensus", "participants"):
        assert (run_dir / f"{name}.png").stat().st_size > 5000
    assert 0.1 < summary["ssl_alm_accuracy"] <= 1 and summary["rounds"] == 10


@pytest.mark.ray
def test_a_diverging_run_ends_with_exit_3_a_summary_and_plots(tmp_path, capsys, ray_local):
    code = main(["run", str(config_file(tmp_path)), "baselines.local_lr=1e6", "alm.tau=1e6", "dtype=float32"])
    err = capsys.readouterr().err.splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("raylab: error: ")
    assert any(f"diverged at round 5 (ssl_alm {key} is" in err[0] for key in ("objective", "norm", "consensus"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at"] == 5
    assert (run_dir / "overview.png").exists()


def test_the_yaml_arrays_path_equals_simulate_on_the_same_arrays(tmp_path):
    rs = np.random.RandomState(1)
    features = [rs.randn(8 + i, 3) for i in range(6)]
    targets = [a @ np.ones(3) + rs.randn(len(a)) for a in features]
    np.savez(tmp_path / "agents.npz", **{f"features_{i}": a for i, a in enumerate(features)},
             **{f"targets_{i}": b for i, b in enumerate(targets)})
    path = config_file(tmp_path, rounds=40, eval_every=20, batch_size=None, methods=["ssl_alm"],
                       data={"kind": "arrays", "path": str(tmp_path / "agents.npz")}, model={"name": "least_squares"},
                       availability={"kind": "bernoulli", "p": 0.5}, alm={})
    cfg = load_config(path)
    run_dir, _ = driver.prepare_run_dir(cfg, None)
    summary = driver.execute(cfg, run_dir)
    result = simulate(ArrayData(features, targets), rounds=40, availability={"p": 0.5}, eval_every=20)
    assert summary["ssl_alm_distance"] == pytest.approx(result.history[-1]["ssl_alm_distance"], rel=1e-12)
    assert [r["step"] for r in read_metrics(run_dir)] == [20, 40]
