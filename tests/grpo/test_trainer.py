"""The GRPO trainer and experiment on Ray: the reward rises on a trivially learnable task, a resumed run repeats
the uninterrupted one, and bad configs are one-line errors."""
import json
import shutil

import pytest

from raylab.config import ConfigError, validate
from raylab.driver import execute, prepare_run_dir

PROMPTS = [{"prompt": p, "answer": ""} for p in ("ab=", "cd=", "ef=", "gh=", "12=", "34=", "56=", "78=")]


def digit_share(completions: list[str], examples: list[dict]) -> list[float]:
    """A trivially learnable reward: the share of digits among the completion's characters."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def config(model_dir, **overrides):
    data = {"experiment": "grpo", "seed": 0, "steps": 4, "prompts_per_step": 4, "eval_every": 0, "progress": False,
            "policy": {"model": model_dir},
            "data": {"task": "arithmetic", "num_train": 32, "num_eval": 8},
            "rollout": {"backend": "hf", "num_workers": 2, "cpus_per_worker": 0.5, "num_generations": 8,
                        "max_new_tokens": 4},
            "learner": {"lr": 3e-3, "cpus": 1}}
    for key, value in overrides.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return validate(data)


@pytest.mark.ray
@pytest.mark.slow
def test_rollout_workers_and_learner_raise_the_reward(ray_local, tiny_model_dir):
    from raylab.grpo.trainer import GRPOTrainer

    cfg = config(tiny_model_dir, steps=10)
    trainer = GRPOTrainer(cfg, PROMPTS, PROMPTS, digit_share)
    try:
        rows = [trainer.step(step) for step in range(cfg.steps)]
    finally:
        trainer.shutdown()
    first, last = rows[0]["reward_mean"], sum(r["reward_mean"] for r in rows[-3:]) / 3
    assert last > first + 0.15, [r["reward_mean"] for r in rows]
    # every worker held the learner's weights when sampling: rollout and learner log-probs agree
    assert max(r["logprob_gap_max"] for r in rows) < 1e-3
    for key in ("frac_zero_std", "reward_var_mean", "effective_lr_mean", "clip_frac", "entropy", "grad_norm",
                "rollout_tokens_per_s", "learner_tokens_per_s", "reward_std"):
        assert key in rows[-1]


@pytest.mark.ray
@pytest.mark.slow
def test_resume_continues_identically(ray_local, tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, output_dir=str(tmp_path), checkpoint_every=2,
                 **{"algorithm.reward": "exact_match", "rollout.num_workers": 1})
    run_dir, _ = prepare_run_dir(cfg, None)
    execute(cfg, run_dir)
    full = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # a copy of the run stopped after step 2: its newest checkpoint is the one at step 2
    cut = tmp_path / "cut"
    shutil.copytree(run_dir, cut)
    (cut / "checkpoints" / "ckpt-000000004.pt").unlink()
    (cut / "checkpoints" / "latest").write_text("ckpt-000000002.pt")
    execute(cfg, cut, resume=True)
    resumed = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]  # row 0: the evaluation before any update
    for a, b in zip(full[1:], resumed[1:]):
        for key in ("reward_mean", "loss", "grad_norm", "entropy", "completion_len_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.parametrize("override, message", [
    ({"rollout.num_generations": 1}, "rollout.num_generations: Input should be greater than or equal to 2"),
    ({"algorithm.reward": "no_such_reward"}, "algorithm.reward"),
    ({"policy.model": "./no/such/model"}, "policy.model: no such local model directory './no/such/model'"),
    ({"algorithm.loss_agg_mode": "mean"}, "algorithm.loss_agg_mode"),
    ({"learner.optimizer": "adam"}, "learner.optimizer: Input should be 'adamw' or 'sgd'"),
    ({"learner.schedule": "exp"}, "learner.schedule: Input should be 'constant', 'linear' or 'cosine'"),
    ({"learner.lr": -1.0}, "learner.lr: must be a finite number > 0"),
    ({"learner.schedule": "cosine", "learner.warmup_steps": 10}, "learner.warmup_steps: must be < steps"),
    ({"learner.lora.rank": -2}, "learner.lora.rank: must be >= 0"),
    ({"learner.bogus": 1}, "learner.bogus"),
    ({"algorithm.clip_ratio_c": 0.5}, "algorithm.clip_ratio_c"),
    ({"rollout.lora_sync": "adapter", "rollout.backend": "vllm"},
     r"rollout.lora_sync: adapter needs LoRA in the learner \(learner.lora.rank > 0, got 0\)"),
    ({"rollout.lora_sync": "adapter", "learner.lora.rank": 8}, "rollout.lora_sync: adapter needs rollout.backend=vllm"),
    ({"rollout.lora_sync": "adapter", "rollout.backend": "vllm", "learner.lora.rank": 1024},
     "learner.lora.rank: vLLM serves LoRA ranks up to 512"),
    ({"rollout.lora_sync": "delta"}, "rollout.lora_sync: Input should be 'merged' or 'adapter'"),
])
def test_bad_configs_are_one_line_errors(tiny_model_dir, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        config(tiny_model_dir, **override)
    assert "\n" not in str(err.value)


SAMPLE = "tests/data/gsm8k_sample.jsonl"


@pytest.mark.parametrize("split, message", [
    ({"easy_max": 20, "hard_min": 30}, "data.split: the rule leaves the hard subset of .* empty"),
    ({"easy_max": 4, "hard_min": 3}, "data.split.easy_max: must be < hard_min"),
    ({"measure": "tokens", "easy_max": 1, "hard_min": 2, "tokenizer": "./no/tokenizer"},
     "data.split.tokenizer: no such local model directory"),
])
def test_bad_gsm8k_split_rules_fail_before_any_model_loads(tiny_model_dir, split, message):
    with pytest.raises(ConfigError, match=message) as err:
        config(tiny_model_dir, **{"data.task": "gsm8k", "data.source": SAMPLE, "data.split": split})
    assert "\n" not in str(err.value)


@pytest.mark.ray
@pytest.mark.slow
def test_a_collapsed_policy_ends_the_run_as_diverged(ray_local, tiny_model_dir, tmp_path):
    from raylab.results import Diverged

    # lr=1e4 wrecks the policy in one step: no reward afterwards, so no gradient ever again
    cfg = config("assets/tiny_policy", output_dir=str(tmp_path), steps=8, prompts_per_step=8,
                 **{"learner.lr": 1e4, "algorithm.reward": "exact_match", "rollout.num_workers": 1,
                    "rollout.max_new_tokens": 3, "data.digits": 1})
    run_dir, _ = prepare_run_dir(cfg, None)
    with pytest.raises(Diverged, match="policy collapse") as err:
        execute(cfg, run_dir)
    assert err.value.step < 8
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and (run_dir / "grpo_reward.png").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_training_options_run_end_to_end(ray_local, tiny_model_dir, tmp_path):
    """Dynamic sampling, truncation masking, IS correction, dual-clip, pass@k evaluation and save_pretrained
    exports in one short run: each leaves its trace in the metrics or the run directory."""
    from transformers import AutoModelForCausalLM

    cfg = config("assets/tiny_policy", output_dir=str(tmp_path), steps=2, prompts_per_step=4, eval_k=4,
                 eval_every=2, export_every=2,
                 **{"algorithm.reward": "exact_match", "algorithm.dynamic_sampling": 2,
                    "algorithm.mask_truncated": True, "algorithm.is_cap": 2.0, "algorithm.clip_ratio_c": 3.0,
                    "rollout.num_workers": 1, "rollout.max_new_tokens": 2, "data.digits": 1,
                    "learner.optimizer": "sgd", "learner.lr": 0.05, "learner.schedule": "cosine"})
    run_dir, _ = prepare_run_dir(cfg, None)
    summary = execute(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "reward_mean" in r]
    assert all(r["groups_trained"] <= 4 <= r["groups_sampled"] for r in trained)
    assert [r["lr"] for r in trained] == pytest.approx([0.05, 0.0])  # cosine over 2 steps
    assert {"eval_pass@1", "eval_pass@4", "eval_accuracy"} <= set(rows[-1]) and "eval_pass@4_final" in summary
    assert rows[-1]["eval_pass@4"] >= rows[-1]["eval_pass@1"]
    exported = run_dir / "export" / "step-000002"
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert model.config.model_type == "llama" and (exported / "tokenizer.json").exists()
