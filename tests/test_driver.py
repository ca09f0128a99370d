"""The driver, run directories, resume, Ray Tune sweeps and reports, end to end on a local Ray instance."""
import json

import pytest
import yaml

from raylab import driver
from raylab.cli import main
from raylab.config import load_config
from raylab.results import read_metrics, report

pytestmark = pytest.mark.ray


def toy_config(tmp_path, **extra):
    data = {"experiment": "toy_experiment", "steps": 12, "lr": 0.3, "checkpoint_every": 4,
            "output_dir": str(tmp_path / "runs"), "progress": False, **extra}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_writes_a_readable_run_directory(tmp_path, ray_local):
    run_dir, summary = driver.run(load_config(toy_config(tmp_path)))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["steps"] == 12
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(12))
    assert json.loads((run_dir / "summary.json").read_text())["loss"] == pytest.approx(summary["loss"])
    assert (run_dir / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["ckpt-000000008.pt",
                                                                              "ckpt-000000012.pt"]


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, ray_local):
    full_dir, full = driver.run(load_config(toy_config(tmp_path)))
    crashing = load_config(toy_config(tmp_path, fail_at=9))
    with pytest.raises(RuntimeError, match="planned failure"):
        driver.run(crashing)
    (crashed_dir,) = [d for d in (tmp_path / "runs").iterdir() if d != full_dir]
    assert max(r["step"] for r in read_metrics(crashed_dir)) == 8
    _, resumed = driver.run(crashing, resume=crashed_dir)
    assert resumed == full
    assert read_metrics(crashed_dir) == read_metrics(full_dir)


def test_resume_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    code = main(["run", str(toy_config(tmp_path)), "--resume", str(tmp_path)])
    assert code == 2 and "not a run directory" in capsys.readouterr().err


def test_tune_runs_four_trials_retries_a_failure_and_writes_the_best_config(tmp_path, ray_local, capsys):
    sweep = {"metric": "loss", "mode": "min", "max_failures": 1, "cpus_per_trial": 1,
             "space": {"lr": {"grid": [0.05, 0.5]}, "seed": {"grid": [0, 1]}}}
    # every trial crashes once at step 5 and is retried from its checkpoint at step 4
    path = toy_config(tmp_path, sweep=sweep, fail_at=5)
    assert main(["tune", str(path)]) == 0
    (out,) = (tmp_path / "runs").iterdir()
    trials = (out / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 4
    assert all(row.endswith(",") for row in trials[1:]), "a retried trial must end without error"
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["lr"] == 0.5 and "sweep" not in best
    trial_runs = sorted(out.glob("tune/*/run"))
    assert len(trial_runs) == 4
    for run_dir in trial_runs:  # the retry resumed: every step logged exactly once
        assert [r["step"] for r in read_metrics(run_dir)] == list(range(12))
    assert "trials.md" in capsys.readouterr().out


def test_asha_scheduler_stops_bad_trials_early(tmp_path, ray_local):
    # the good learning rates run first (2 at a time), so the bad ones meet a full rung and are cut there
    sweep = {"metric": "loss", "mode": "min", "scheduler": "asha", "grace_period": 2, "num_samples": 1,
             "max_concurrent": 2, "space": {"lr": {"grid": [0.5, 0.6, 0.001, 0.002]}}}
    assert main(["tune", str(toy_config(tmp_path, steps=20, sweep=sweep))]) == 0
    (out,) = (tmp_path / "runs").iterdir()
    lengths = {yaml.safe_load((d / "config.yaml").read_text())["lr"]: len(read_metrics(d))
               for d in out.glob("tune/*/run")}
    assert max(lengths[0.5], lengths[0.6]) == 20
    assert lengths[0.001] < 8 and lengths[0.002] < 8


def test_report_tables_runs_with_their_figures(tmp_path, ray_local):
    run_dir, _ = driver.run(load_config(toy_config(tmp_path)))
    text = report([run_dir])
    assert run_dir.name in text and "toy_experiment" in text and "loss.png" in text
    assert "| loss |" in text.splitlines()[0] + " |" or "loss" in text.splitlines()[0]
