"""`raylab bench grpo` runs end to end on a tiny setting: TRL's GRPOTrainer and raylab's step with both the hf
and the torch rollout backends, plus the throughput lines, in a run directory with both sides' settings.
(Speed figures come from running the benchmark.)"""
import json

import pytest

from raylab.bench import grpo as bench


@pytest.mark.ray
@pytest.mark.slow
def test_the_benchmark_runs_every_side(ray_local, capsys, tmp_path):
    pytest.importorskip("trl")
    assert bench.main(["--steps", "1", "--rounds", "1", "--prompts", "2", "--k", "2", "--max-new-tokens", "4",
                       "--rollout-prompts", "2", "--backends", "hf,torch", "--cpus", "1", "--workers", "1",
                       "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TRL GRPOTrainer" in out and "trl settings:" in out and "raylab settings:" in out
    for backend in ("hf", "torch"):
        assert f"raylab ({backend} rollouts" in out
    [run_dir] = tmp_path.glob("bench-grpo-*")
    settings = json.loads((run_dir / "settings.json").read_text())["settings"]
    assert settings["trl"]["gradient_checkpointing"] is settings["raylab"]["gradient_checkpointing"] is False
    assert settings["trl"]["torch_threads"] == settings["raylab"]["learner_threads"] == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert {"trl_step_s", "raylab_hf", "raylab_torch", "rollout_tokens_per_s"} <= set(results)
    assert "x TRL" in (run_dir / "results.md").read_text()
