"""Experiment `grpo`: GRPO post-training of a causal LM with Ray rollout workers and a learner.

    raylab run experiments/grpo_tiny.yaml                        # tiny Llama on arithmetic, a few minutes on 2 CPUs
    raylab run experiments/grpo_tiny.yaml rollout.backend=vllm algorithm.norm_adv_by_std_in_grpo=false
    raylab tune experiments/grpo_gsm8k.yaml                      # the paper's setting (GPU + weights needed)

Writes metrics.jsonl (one row per step: reward statistics, the curvature diagnostic, KL, clip fraction,
entropy, grad norm, tokens/s, the rollout-vs-learner log-prob gap; `eval_accuracy`, taken before the update, on
evaluation steps), checkpoints (learner weights + optimizer) for `--resume`, and grpo_reward.png /
grpo_accuracy.png.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from raylab.config import RunConfig, Section
from raylab.grpo.policy import check_model_path
from raylab.results import plot_lines


class PolicyConfig(Section):
    model: str = Field("assets/tiny_policy", description="local model directory or Hugging Face hub id")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str) -> str:
        check_model_path(model)
        return model


class DataConfig(Section):
    task: Literal["arithmetic", "gsm8k", "math500"] = "arithmetic"
    num_train: int = Field(2000, ge=1, description="training questions (arithmetic: generated)")
    num_eval: int = Field(200, ge=1, description="held-out questions for the greedy accuracy")
    digits: int = Field(2, ge=1, description="arithmetic: digits per operand")
    terms: int = Field(2, ge=2, description="arithmetic: operands per question")
    ops: str = Field("+", description="arithmetic: operators to draw from (+ - *)")
    source: str | None = Field(None, description="gsm8k/math500: local file or hub id (default: the hub dataset)")
    eval_split: str = Field("test", description="gsm8k/math500: split of the evaluation questions")
    template: str = Field("qa", description="gsm8k/math500: prompt template (plain, qa, boxed, or a format string)")
    difficulty: Literal["all", "easy", "hard"] = Field("all", description="gsm8k/math500: the seed's easy/hard split")


class VLLMOptions(Section):
    gpu_memory_utilization: float = Field(0.2, gt=0, le=1, description="on CPU: host memory share for KV cache")
    max_model_len: int = Field(256, ge=8)
    dtype: str = "float32"
    enforce_eager: bool = True
    max_num_seqs: int = Field(256, ge=1)


class RolloutConfig(Section):
    backend: Literal["hf", "torch", "vllm"] = "hf"
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads per worker (None: its CPUs); rollout and "
                                "learner phases never overlap, so each may use every core in its turn")
    num_generations: int = Field(8, ge=2, description="K, answers per question (a group needs two)")
    max_new_tokens: int = Field(8, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    vllm: VLLMOptions = VLLMOptions()


class AlgorithmConfig(Section):
    adv_estimator: Literal["grpo", "rloo", "dr_grpo", "pg"] = "grpo"
    norm_adv_by_std_in_grpo: bool = Field(True, description="grpo: divide by the group's reward std")
    clip_ratio_low: float = Field(0.2, ge=0, lt=1)
    clip_ratio_high: float = Field(0.2, ge=0)
    kl_coef: float = Field(0.0, ge=0, description="0: no reference model is loaded")
    kl_loss_type: Literal["k1", "k3"] = "k3"
    kl_in_reward: bool = Field(False, description="subtract kl_coef * KL(sequence) from the reward instead")
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    reward: str = Field("exact_match", description="exact_match, math_verify, or module:function")

    @field_validator("reward")
    @classmethod
    def _reward_exists(cls, name: str) -> str:
        from raylab.grpo.rewards import resolve_reward

        resolve_reward(name)
        return name


class LoraConfig(Section):
    rank: int = Field(0, ge=0, description="0: full fine-tuning")
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None: every linear layer")


class LearnerConfig(Section):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(64, ge=1, description="sequences per forward/backward (gradient accumulation)")
    ppo_epochs: int = Field(1, ge=1)
    mini_batches: int = Field(1, ge=1, description="optimizer steps per rollout batch")
    gradient_checkpointing: bool = False
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    cpus: float = Field(1.0, ge=0)
    gpus: float = Field(0.0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads of the learner (None: its CPUs)")
    lora: LoraConfig = LoraConfig()


class Config(RunConfig):
    experiment: Literal["grpo"] = "grpo"
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    steps: int = Field(50, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    eval_every: int = Field(10, ge=0, description="steps between greedy evaluations; 0: start and end only")


HUB_DATASETS = {"gsm8k": "openai/gsm8k", "math500": "HuggingFaceH4/MATH-500"}


def load_examples(data: DataConfig, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval) examples with `prompt` and `answer` keys."""
    if data.task == "arithmetic":
        from raylab.data.arithmetic import make_arithmetic

        examples = make_arithmetic(data.num_train + data.num_eval, data.digits, data.terms, data.ops, seed=seed)
        return examples[: data.num_train], examples[data.num_train:]
    if data.task == "gsm8k":
        from raylab.data.gsm8k import load_gsm8k as load
    else:
        from raylab.data.math500 import load_math500 as load
    source = data.source or HUB_DATASETS[data.task]
    difficulty = None if data.difficulty == "all" else data.difficulty
    if data.task == "math500" or data.eval_split == "train":  # one split: hold out its tail for evaluation
        examples = load(source, split="test" if data.task == "math500" else "train", template=data.template,
                        difficulty=difficulty)
        return examples[: -data.num_eval][: data.num_train], examples[-data.num_eval:]
    return (load(source, split="train", template=data.template, difficulty=difficulty, limit=data.num_train),
            load(source, split=data.eval_split, template=data.template, difficulty=difficulty, limit=data.num_eval))


def run(cfg: Config, ctx) -> dict:
    from raylab.grpo.rewards import resolve_reward
    from raylab.grpo.trainer import GRPOTrainer

    train, evals = load_examples(cfg.data, cfg.seed)
    trainer = GRPOTrainer(cfg, train, evals, resolve_reward(cfg.algorithm.reward), actor_cpus=ctx.actor_cpus)
    try:
        start = 0
        if ctx.resume and (ckpt := ctx.load_checkpoint()):
            start, state = ckpt
            trainer.load_state_dict(state)
            ctx.truncate_metrics(start - 1)
        with ctx.progress(cfg.steps, desc="grpo", initial=start) as bar:
            for step in range(start, cfg.steps):
                # evaluated before this step's update, so the row of step 0 holds the starting accuracy
                evaluated = step == 0 or (cfg.eval_every and step % cfg.eval_every == 0)
                accuracy = {"eval_accuracy": trainer.evaluate()} if evaluated else {}
                metrics = {**trainer.step(step), **accuracy}
                ctx.log(metrics, step=step)
                if ctx.should_checkpoint(step + 1):
                    ctx.save_checkpoint(trainer.state_dict(), step + 1)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}")
                bar.update()
        final_accuracy = trainer.evaluate()
        ctx.save_checkpoint(trainer.state_dict(), cfg.steps)
    finally:
        trainer.shutdown()
    rows = ctx.metrics()
    steps = [r["step"] for r in rows]
    plot_lines(ctx.path("grpo_reward.png"), {"reward mean": (steps, [r["reward_mean"] for r in rows]),
                                             "zero-std groups": (steps, [r["frac_zero_std"] for r in rows])},
               xlabel="step", ylabel="value", title=f"GRPO ({cfg.rollout.backend}, {trainer.adv_mode})")
    evals_at = [r for r in rows if "eval_accuracy" in r]
    plot_lines(ctx.path("grpo_accuracy.png"),
               {"greedy accuracy": ([r["step"] for r in evals_at] + [cfg.steps],
                                    [r["eval_accuracy"] for r in evals_at] + [final_accuracy])},
               xlabel="step", ylabel="eval accuracy")
    window = max(1, min(5, len(rows) // 4))
    return {
        "eval_accuracy_first": evals_at[0]["eval_accuracy"] if evals_at else float("nan"),
        "eval_accuracy_final": final_accuracy,
        "reward_mean_first": sum(r["reward_mean"] for r in rows[:window]) / window,
        "reward_mean_last": sum(r["reward_mean"] for r in rows[-window:]) / window,
        "step_s_mean": sum(r["step_s"] for r in rows) / len(rows),
        "logprob_gap_mean": sum(r.get("logprob_gap_mean", 0.0) for r in rows) / len(rows),
    }
