"""The federated experiment without Ray: config errors, resume after an interruption, plots and the table."""
import pytest
import torch
import yaml

from raylab import driver
from raylab.cli import main
from raylab.config import load_config
from raylab.results import RunContext, read_metrics

SMALL = {"experiment": "federated", "rounds": 20, "eval_every": 5, "checkpoint_every": 5, "dtype": "float64",
         "data": {"name": "digits", "num_agents": 24, "alpha": 0.3}, "availability": {"kind": "markov", "p": 0.3},
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
    ("data.name=mnist", "data.name: Input should be 'digits', 'least_squares' or 'synthetic' (got 'mnist')"),
    ("model.name=least_squares", "model: least_squares needs real-valued targets"),
    ("availability.kind=markov availability.p=0.9 availability.mean_on=2", "needs mean_on >= p / (1 - p) = 9"),
    ("methods=[ssl_alm,scaffold]", "methods.1: Input should be 'ssl_alm', 'fedavg' or 'fedprox' (got 'scaffold')"),
])
def test_bad_configs_fail_with_one_line_naming_the_key(tmp_path, capsys, override, message):
    code = main(["check", str(config_file(tmp_path)), *override.split()])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_shipped_experiments_validate():
    for name in ("federated_alm", "federated_sweep"):
        cfg = load_config(f"experiments/{name}.yaml")
        assert cfg.problem().num_agents >= 100
    assert load_config("experiments/federated_alm.yaml").availability.p == 0.1


def final_models(run_dir):
    step, state = RunContext(run_dir).load_checkpoint()
    return step, state["server"]["x0"], state["agents"]


class Interrupted(RunContext):
    """A run stopped by Ctrl-C right after it logged round 15 (its last checkpoint is round 10)."""

    def log(self, metrics, step):
        super().log(metrics, step)
        if step == 15:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path):
    cfg = load_config(config_file(tmp_path))     # the checkpoint path is the same with or without actors
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
    for m, x0 in final_models(full_dir)[1].items():
        assert torch.equal(x0, final_models(run_dir)[1][m])


def test_the_run_writes_plots_and_prints_a_table(tmp_path, capsys):
    cfg = load_config(config_file(tmp_path, rounds=10))
    run_dir, _ = driver.prepare_run_dir(cfg, None)
    summary = driver.execute(cfg, run_dir)
    out = capsys.readouterr().out
    assert "SSL-ALM" in out and "FedAvg" in out and "FedProx" in out and "accuracy" in out
    for name in ("overview", "accuracy", "objective", "stationarity", "consensus", "participants"):
        assert (run_dir / f"{name}.png").stat().st_size > 5000
    assert 0.1 < summary["ssl_alm_accuracy"] <= 1 and summary["rounds"] == 10
