"""`raylab bench grpo` runs end to end on a tiny setting: TRL's GRPOTrainer and raylab's step with both the hf
and the torch rollout backends, plus the throughput lines. (Speed figures come from running the benchmark.)"""
import pytest

from raylab.bench import grpo as bench


@pytest.mark.ray
@pytest.mark.slow
def test_the_benchmark_runs_every_side(ray_local, capsys):
    pytest.importorskip("trl")
    assert bench.main(["--steps", "1", "--rounds", "1", "--prompts", "2", "--k", "2", "--max-new-tokens", "4",
                       "--rollout-prompts", "2", "--backends", "hf,torch", "--cpus", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "TRL GRPOTrainer" in out
    for backend in ("hf", "torch"):
        assert f"raylab ({backend:5s} rollouts" in out
    assert "torch / hf:" in out and "weight sync" in out
