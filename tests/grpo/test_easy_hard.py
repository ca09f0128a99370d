"""The easy/hard study: the committed policy starts near the seed's pi* (0.5 easy, 0.2 hard), an SGD step of the
study is exactly lr times the policy gradient, and the experiment runs on Ray, writes its figures and table, and
resumes identically."""
import shutil

import pytest
import torch

from raylab.data.arithmetic import carry_questions
from raylab.grpo import diagnostics
from raylab.grpo.easy_hard import Arm, StudyRun, StudySettings

POLICY = "assets/tiny_policy_easy_hard"


def test_carry_questions_are_split_by_carry():
    questions = carry_questions(1)
    assert len(questions) == 100 and sum(q["difficulty"] == "hard" for q in questions) == 45
    assert {q["prompt"]: q["difficulty"] for q in questions}["7+8="] == "hard"


def test_committed_policy_starts_near_the_seeds_accuracies():
    from raylab.grpo.policy import build_char_tokenizer, load_policy

    model, tok = load_policy(POLICY), build_char_tokenizer()
    questions = carry_questions(1)
    probs = diagnostics.success_probs(model, tok, questions)
    hard = torch.tensor([q["difficulty"] == "hard" for q in questions])
    assert 0.35 < probs[~hard].mean() < 0.6 and 0.1 < probs[hard].mean() < 0.3


def test_a_study_step_is_an_sgd_step_on_the_grpo_loss():
    settings = StudySettings(prompts_per_step=2, num_generations=4)
    hard = [q for q in carry_questions(1) if q["difficulty"] == "hard"]
    run = StudyRun(POLICY, Arm("sgd", "std", "sgd", lr=0.01), hard, settings, seed=0)
    before = diagnostics.flat_parameters(run.learner.model)
    row = run.advance(0, 1, evaluate_every=1)[0]
    grad = torch.cat([p.grad.flatten() for p in run.learner.model.parameters() if p.requires_grad])
    after = diagnostics.flat_parameters(run.learner.model)
    assert torch.allclose(after, before - 0.01 * grad, atol=1e-8)
    assert row["logprob_gap_max"] < 1e-4  # the rollout model sampled with the learner's weights
    assert 0 <= row["accuracy"] <= 1


@pytest.mark.ray
@pytest.mark.slow
def test_experiment_runs_writes_its_table_and_resumes_identically(tmp_path, ray_local):
    from raylab import driver
    from raylab.config import validate
    from raylab.results import read_metrics

    cfg = validate({"experiment": "grpo_easy_hard", "steps": 2, "seeds": 2, "eval_every": 1, "chunk": 1,
                    "checkpoint_every": 1, "subsets": ["hard"], "progress": False, "output_dir": str(tmp_path),
                    "settings": {"prompts_per_step": 2, "num_generations": 4, "diagnostic_questions": 4},
                    "diagnostics": {"arm": "sgd-std", "every": 1}})
    run_dir, summary = driver.run(cfg)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert {"hard/sgd-std/accuracy", "hard/sgd-no-std/accuracy_se", "diag_curvature", "diag_cos_mean"} <= set(rows[0])
    assert len(rows[0]["diag_variance"]) == 4 and "pearson_same" in summary
    for name in ("easy_hard_accuracy.png", "easy_hard_cosines.png", "easy_hard_curvature.png", "easy_hard_table.md"):
        assert (run_dir / name).exists(), name
    assert "± " in (run_dir / "easy_hard_table.md").read_text()
    crashed = tmp_path / "crashed"
    shutil.copytree(run_dir, crashed)
    (crashed / "checkpoints" / "ckpt-000000002.pt").unlink()
    (crashed / "checkpoints" / "latest").write_text("ckpt-000000001.pt")
    _, resumed = driver.run(cfg, resume=crashed)
    assert read_metrics(crashed) == rows and resumed == pytest.approx(summary, nan_ok=True)


def test_bad_configs_are_one_line_errors():
    from raylab.config import ConfigError, validate

    for data, message in [({"diagnostics": {"arm": "nope"}}, "diagnostics.arm: 'nope' is not one of the arms"),
                          ({"arms": [{"name": "a", "mode": "std"}, {"name": "a", "mode": "no_std"}]}, "names must"),
                          ({"arms": [{"name": "a", "mode": "std", "optimizer": "adam"}]}, "optimizer"),
                          ({"policy": "./missing"}, "policy: no such local model directory")]:
        with pytest.raises(ConfigError, match=message) as err:
            validate({"experiment": "grpo_easy_hard", "diagnostics": {"arm": None}} | data
                     if "diagnostics" not in data else {"experiment": "grpo_easy_hard"} | data)
        assert "\n" not in str(err.value)


def test_the_profile_replays_the_study_and_its_std_scale_is_at_least_two():
    from raylab.grpo.easy_hard_profile import profile

    settings = StudySettings(prompts_per_step=4, num_generations=4)
    hard = [q for q in carry_questions(1) if q["difficulty"] == "hard"]
    rows = profile(StudyRun(POLICY, Arm("sgd", "std", "sgd", lr=0.01), hard, settings, seed=0), steps=2, every=2)
    replay = StudyRun(POLICY, Arm("sgd", "std", "sgd", lr=0.01), hard, settings, seed=0)
    assert rows[0]["accuracy"] == pytest.approx(replay.accuracy(), abs=1e-6)
    replay.advance(0, 2, evaluate_every=0)
    assert [r["step"] for r in rows] == [0, 2]
    assert rows[1]["accuracy"] == pytest.approx(replay.accuracy(), abs=1e-6)  # the same run as the study's
    # 1/sigma >= 2 for any group of 0/1 rewards with variance (sigma <= 1/2)
    assert rows[1]["std_scale"] >= 2.0 and 0 <= rows[1]["stuck"] <= 1
