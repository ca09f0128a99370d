"""The mdlm_train experiment: a short run, interrupted and resumed, equals an uninterrupted one."""
import pytest
import torch

import raylab.experiments.mdlm_train as mdlm_train
from raylab.config import load_config
from raylab.diffusion.model import TinyMDLM
from raylab.diffusion.train import learning_rate
from raylab.driver import execute, prepare_run_dir
from raylab.results import read_metrics

TINY = ["steps=8", "batch_size=8", "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "n_digits=4",
        "log_every=1", "eval_every=4", "eval_samples=8", "checkpoint_every=3", "warmup=2", "progress=false"]


def run(tmp_path, name, overrides=()):
    cfg = load_config("experiments/mdlm_train.yaml", TINY + list(overrides))  # exports to RUN_DIR/model
    cfg = cfg.model_copy(update={"output_dir": str(tmp_path), "name": name})
    return cfg, prepare_run_dir(cfg, None)[0]


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    cfg, straight = run(tmp_path, "straight")
    execute(cfg, straight)

    cfg, broken = run(tmp_path, "broken")
    real_loss, calls = mdlm_train.mdlm_loss, []

    def crash_at_step_7(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(mdlm_train, "mdlm_loss", crash_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, broken)
    monkeypatch.setattr(mdlm_train, "mdlm_loss", real_loss)
    assert max(r["step"] for r in read_metrics(broken)) == 6  # six steps completed, checkpointed after 6
    summary = execute(cfg, broken, resume=True)  # restarts from the checkpoint taken after 6 steps

    assert read_metrics(broken) == read_metrics(straight)
    a, b = TinyMDLM.load(straight / "model"), TinyMDLM.load(broken / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert set(summary) >= {"final_loss", "static_accuracy", "parameters"}


def test_bad_config_value_is_one_line_error():
    from raylab.config import ConfigError

    with pytest.raises(ConfigError, match="model.d_model: Input should be greater than or equal to 8"):
        load_config("experiments/mdlm_train.yaml", ["model.d_model=4"])


def test_learning_rate_schedule():
    assert learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(100, 100, 1.0, 10) == pytest.approx(0.1)


def test_a_non_finite_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    import json

    from raylab.results import Diverged

    cfg, run_dir = run(tmp_path, "nan")
    real_loss, calls = mdlm_train.mdlm_loss, []

    def nan_at_step_3(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(mdlm_train, "mdlm_loss", nan_at_step_3)
    with pytest.raises(Diverged, match="diverged at step 3 \\(MDLM loss is nan\\)"):
        execute(cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at"] == 3
    assert (run_dir / "loss.png").is_file()  # plot(cfg, ctx) ran on what was logged before
