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
    assert settings["trl"]["omp_wait_policy"] == settings["raylab"]["omp_wait_policy"] == "PASSIVE"
    results = json.loads((run_dir / "results.json").read_text())
    assert {"trl_step_s", "raylab_hf", "raylab_torch", "rollout_tokens_per_s", "rounds"} <= set(results)
    assert [r["side"] for r in results["rounds"]] == ["trl", "hf", "torch"]
    assert all("load_before" in r and "load_after" in r for r in results["rounds"])
    assert "round 1 TRL GRPOTrainer" in out and "x TRL (median of rounds)" in (run_dir / "results.md").read_text()


def test_sides_alternate_and_the_paired_ratio_ignores_a_burst_in_one_round():
    from argparse import Namespace

    sides = ["trl", "hf", "torch"]
    assert [bench.round_order(sides, r) for r in range(3)] == [sides, sides[::-1], sides]
    # TRL's round 2 hit a burst (10x slower) while raylab hf held at 0.8 s: that round's ratio (0.08) is an
    # outlier, which the median over rounds drops
    trl = [[1.0, 1.0], [10.0, 10.0], [1.0, 1.0]]
    rounds = []
    for r in range(3):
        rounds.append({"round": r + 1, "side": "trl", "step_s": trl[r], "median_s": trl[r][0]})
        phases = [{"step_s": 0.8, "rollout_s": 0.4, "learner_s": 0.3, "sync_s": 0.1}] * 2
        rounds.append({"round": r + 1, "side": "hf", "step_s": [0.8, 0.8], "median_s": 0.8, "phases": phases})
    results, rows = bench.summarize_rounds(rounds, ["trl", "hf"], Namespace(workers=2))
    assert results["raylab_hf"]["x_trl_per_round"] == pytest.approx([0.8, 0.08, 0.8])
    assert results["raylab_hf"]["x_trl_paired"] == pytest.approx(0.8)
    assert results["trl_step_s"] == 1.0 and results["raylab_hf"]["x_trl_pooled"] == pytest.approx(0.8)
    assert rows[1][0] == "raylab (hf rollouts, 2 workers)"
