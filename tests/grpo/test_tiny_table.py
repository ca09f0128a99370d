"""The grpo_tiny table reader: one row per run directory, greedy accuracy at steps 0, 10 and the end, and the mean
sampled reward of the first and last five steps, sorted by seed then std before no-std."""
import json

import pytest

from raylab.grpo.tiny_table import main


def write_run(folder, seed, std, accuracies, rewards):
    folder.mkdir()
    (folder / "config.yaml").write_text(f"seed: {seed}\nalgorithm:\n  adv_estimator: grpo\n"
                                        f"  norm_adv_by_std_in_grpo: {str(std).lower()}\n")
    rows = [{"step": 0, "eval_accuracy": accuracies[0]}]
    rows += [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)]
    rows[10]["eval_accuracy"], rows[-1]["eval_accuracy"] = accuracies[1], accuracies[2]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_the_table_has_a_row_per_run_in_order(tmp_path, capsys):
    rewards = [0.5] * 5 + [0.7] * 10 + [0.9] * 5
    runs = [write_run(tmp_path / "b", 1, True, [0.5, 0.8, 1.0], rewards),
            write_run(tmp_path / "a", 0, False, [0.25, 0.5, 0.75], rewards)]
    assert main(runs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["| 0 | no-std | 0.250 | 0.500 | 0.750 | 0.50 -> 0.90 |",
                         "| 1 | std | 0.500 | 0.800 | 1.000 | 0.50 -> 0.90 |"]


def test_a_directory_without_metrics_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="not a finished run directory"):
        main([str(tmp_path)])
