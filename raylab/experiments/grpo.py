"""Experiment `grpo`: GRPO post-training of a causal LM with Ray rollout workers and a learner.

    raylab run experiments/grpo_tiny.yaml                        # tiny Llama on arithmetic, a few minutes on 2 CPUs
    raylab run experiments/grpo_tiny.yaml rollout.backend=vllm algorithm.norm_adv_by_std_in_grpo=false
    raylab run experiments/grpo_tiny.yaml rollout.backend=vllm learner.lora.rank=8 rollout.lora_sync=adapter
    raylab run experiments/grpo_easy_hard.yaml                   # the seed's easy/hard study on a tiny LM
    raylab tune experiments/grpo_gsm8k.yaml                      # the paper's setting (GPU + weights needed)

A step (`STEP_NAME`) is one GRPO step: sample K answers for `prompts_per_step` questions, score them, update
the learner, sync the weights; `checkpoint_every` counts steps. metrics.jsonl has a row per completed step
(`step` = steps done): reward statistics, the curvature diagnostic, KL, clip fraction, entropy, grad norm, lr,
tokens/s, the rollout-vs-learner log-prob gap, `sync_bytes` (what one weight sync sends each worker: full weights,
or with `rollout.lora_sync=adapter` the peft adapter files); every `eval_every` steps (and at step 0 and the end) the
evaluation of `raylab.grpo.trainer.GRPOTrainer.evaluate` (greedy accuracy `eval_accuracy`, sampled pass@1 and
pass@k, each per difficulty when the examples have one). Checkpoints hold the learner (weights, optimizer,
schedule clock); `export_every` writes `save_pretrained` folders (peft adapters for LoRA) under `export/`.
Figures: grpo_reward.png, grpo_accuracy.png.

The run stops as diverged (exit 3) on a non-finite loss or gradient, and when the policy collapses: after
earning rewards, it earns none for `collapse_steps` steps in a row. Then every group has zero reward variance,
so the GRPO update is exactly zero and the run cannot recover: `learner.lr=1e4` on grpo_tiny gets there in one
step (reward 0.62 -> 0, its entropy jumping to the uniform policy's log 99 = 4.6 nats; a collapse onto one wrong
answer would instead take the entropy to 0; the message reports it either way).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylab.config import RunConfig, Section, check_model_path, looks_like_path
from raylab.data.split import SplitRule
from raylab.grpo.optim import LearnerConfig
from raylab.plots import plot_lines
from raylab.results import Diverged

STEP_NAME = "step"


class PolicyConfig(Section):
    model: str = Field("assets/tiny_policy", description="local model directory or Hugging Face hub id")


class DataConfig(Section):
    task: Literal["arithmetic", "gsm8k", "math500"] = "arithmetic"
    num_train: int = Field(2000, ge=1, description="training questions (arithmetic: generated)")
    num_eval: int = Field(200, ge=1, description="held-out questions for the evaluation")
    digits: int = Field(2, ge=1, description="arithmetic: digits per operand")
    terms: int = Field(2, ge=2, description="arithmetic: operands per question")
    ops: str = Field("+", description="arithmetic: operators to draw from (+ - *)")
    source: str | None = Field(None, description="gsm8k/math500: local file or hub id (default: the hub dataset)")
    eval_split: str = Field("test", description="gsm8k/math500: split of the evaluation questions")
    template: str = Field("qa", description="gsm8k/math500: prompt template (plain, qa, boxed, or a format string)")
    difficulty: Literal["all", "easy", "hard"] = Field("all", description="train on one difficulty, or all")
    split: SplitRule = Field(default_factory=SplitRule, description="gsm8k: the easy/hard rule")


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
    lora_sync: Literal["merged", "adapter"] = Field(
        "merged", description="with LoRA: send full weights with the adapters merged (any backend), or only the "
        "peft adapter to a LoRA-enabled vLLM engine (backend vllm)")


class AlgorithmConfig(Section):
    adv_estimator: Literal["grpo", "rloo", "dr_grpo", "pg"] = Field(
        "grpo", description="dr_grpo's advantages are no-std's; Dr. GRPO differs in loss_agg_mode only")
    norm_adv_by_std_in_grpo: bool = Field(True, description="grpo: divide by the group's reward std")
    clip_ratio_low: float = Field(0.2, ge=0, lt=1)
    clip_ratio_high: float = Field(0.2, ge=0)
    clip_ratio_c: float | None = Field(None, gt=1, description="dual-clip bound for negative advantages (None: off)")
    is_cap: float | None = Field(None, gt=0, description="truncated importance-sampling correction of the "
                                 "rollout/learner mismatch: weights min(exp(learner - rollout), is_cap)")
    mask_truncated: bool = Field(False, description="leave completions cut by max_new_tokens out of the loss")
    dynamic_sampling: int = Field(0, ge=0, description="extra sampling rounds that replace zero-variance groups "
                                  "(verl's filter_groups); 0: off")
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


class Config(RunConfig):
    experiment: Literal["grpo"] = "grpo"
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    steps: int = Field(50, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    eval_every: int = Field(10, ge=0, description="steps between evaluations; 0: start and end only")
    eval_k: int = Field(0, ge=0, description="samples per eval question for pass@1 and pass@k; 0: greedy only")
    export_every: int = Field(0, ge=0, description="steps between save_pretrained exports; 0: none")
    collapse_steps: int = Field(3, ge=0, description="steps in a row without any reward, after the policy earned "
                                "some, that end the run as diverged; 0: never")

    @model_validator(mode="after")
    def _checks(self) -> "Config":
        check_model_path(self.policy.model, "policy.model")
        if self.data.task == "gsm8k":
            self.data.split.check_tokenizer("data.split")
            source = self.data.source
            if source and looks_like_path(source) and Path(source).expanduser().exists():
                from raylab.data.gsm8k import split_counts

                counts = split_counts(source, self.data.split)
                empty = [band for band in ("easy", "hard") if counts[band] == 0]
                if empty:
                    raise ValueError(f"data.split: the rule leaves the {empty[0]} subset of {source} empty "
                                     f"(easy {counts['easy']}, middle {counts['middle']}, hard {counts['hard']})")
        if self.rollout.lora_sync == "adapter":
            if self.learner.lora.rank == 0:
                raise ValueError("rollout.lora_sync: adapter needs LoRA in the learner (learner.lora.rank > 0, "
                                 "got 0)")
            if self.rollout.backend != "vllm":
                raise ValueError(f"rollout.lora_sync: adapter needs rollout.backend=vllm "
                                 f"(got {self.rollout.backend!r})")
            from raylab.grpo.rollout.vllm import engine_lora_rank

            engine_lora_rank(self.learner.lora.rank)
        if self.learner.schedule != "constant" and self.learner.warmup_steps >= self.steps:
            raise ValueError(f"learner.warmup_steps: must be < steps for a {self.learner.schedule} schedule "
                             f"(got {self.learner.warmup_steps} >= {self.steps})")
        return self


HUB_DATASETS = {"gsm8k": "openai/gsm8k", "math500": "HuggingFaceH4/MATH-500"}


def load_examples(data: DataConfig, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval) examples with `prompt` and `answer` keys (and `difficulty` where the task has one)."""
    if data.task == "arithmetic":
        from raylab.data.arithmetic import make_arithmetic

        examples = make_arithmetic(data.num_train + data.num_eval, data.digits, data.terms, data.ops, seed=seed)
        return examples[: data.num_train], examples[data.num_train:]
    if data.task == "gsm8k":
        from raylab.data.gsm8k import load_gsm8k

        source = data.source or HUB_DATASETS["gsm8k"]
        load = lambda split, limit: load_gsm8k(source, split=split, template=data.template,  # noqa: E731
                                               rule=data.split, limit=limit)
        if data.eval_split == "train":
            examples = load("train", None)
            return _only(examples[: -data.num_eval], data.difficulty)[: data.num_train], examples[-data.num_eval:]
        return _only(load("train", None), data.difficulty)[: data.num_train], load(data.eval_split, data.num_eval)
    from raylab.data.math500 import load_math500

    examples = load_math500(data.source or HUB_DATASETS["math500"], split="test", template=data.template)
    return _only(examples[: -data.num_eval], data.difficulty)[: data.num_train], examples[-data.num_eval:]


def _only(examples: list[dict], difficulty: str) -> list[dict]:
    return examples if difficulty == "all" else [e for e in examples if e.get("difficulty") == difficulty]


def run(cfg: Config, ctx) -> dict:
    from raylab.grpo.learner import NonFiniteLossError
    from raylab.grpo.rewards import resolve_reward
    from raylab.grpo.trainer import GRPOTrainer

    train, evals = load_examples(cfg.data, cfg.seed)
    if not train:
        raise ValueError(f"data.difficulty: no {cfg.data.difficulty} questions among the training examples")
    trainer = GRPOTrainer(cfg, train, evals, resolve_reward(cfg.algorithm.reward), actor_cpus=ctx.actor_cpus)
    try:
        completed, state = ctx.resume()
        if state is not None:
            trainer.load_state_dict(state)
        else:
            ctx.log(trainer.evaluate(), step=0)
        collapsed, best = 0, max((r.get("reward_mean", 0.0) for r in ctx.metrics()), default=0.0)
        with ctx.progress(cfg.steps, desc="grpo", initial=completed) as bar:
            for step in range(completed, cfg.steps):
                try:
                    metrics = trainer.step(step)
                except NonFiniteLossError as err:
                    raise Diverged(step + 1, err.metric, err.value, STEP_NAME) from None
                done = step + 1
                if done == cfg.steps or (cfg.eval_every and done % cfg.eval_every == 0):
                    metrics.update(trainer.evaluate(done))
                ctx.log(metrics, step=done)
                collapsed = collapsed + 1 if best > 0 and metrics["reward_mean"] == 0 else 0
                best = max(best, metrics["reward_mean"])
                if cfg.collapse_steps and collapsed >= cfg.collapse_steps:
                    raise Diverged(done, f"policy collapse: entropy {metrics.get('entropy', float('nan')):.3g} "
                                   f"nats/token, reward_mean {best:.3g} -> 0 for {collapsed} steps; reward_mean",
                                   0.0, STEP_NAME)
                if cfg.export_every and done % cfg.export_every == 0:
                    trainer.export(ctx.path("export") / f"step-{done:06d}")
                if ctx.due(done):
                    ctx.checkpoint(done, trainer.state_dict())
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}")
                bar.update()
        ctx.checkpoint(cfg.steps, trainer.state_dict(), final=True)
    finally:
        trainer.shutdown()
    return summarize(ctx.metrics())


def summarize(rows: list[dict]) -> dict:
    train_rows = [r for r in rows if "reward_mean" in r]
    evals_at = [r for r in rows if "eval_accuracy" in r]
    window = max(1, min(5, len(train_rows) // 4))
    mean = lambda key, part: sum(r.get(key, 0.0) for r in part) / len(part)  # noqa: E731
    summary = {
        "eval_accuracy_first": evals_at[0]["eval_accuracy"], "eval_accuracy_final": evals_at[-1]["eval_accuracy"],
        "reward_mean_first": mean("reward_mean", train_rows[:window]),
        "reward_mean_last": mean("reward_mean", train_rows[-window:]),
        "step_s_mean": mean("step_s", train_rows), "logprob_gap_mean": mean("logprob_gap_mean", train_rows),
    }
    summary.update({f"{k}_final": v for k, v in evals_at[-1].items() if k.startswith("eval_") and k != "eval_accuracy"})
    return summary


def plot(cfg: Config, ctx) -> None:
    rows = ctx.metrics()
    train_rows = [r for r in rows if "reward_mean" in r]
    steps = [r["step"] for r in train_rows]
    mode = "std" if cfg.algorithm.norm_adv_by_std_in_grpo and cfg.algorithm.adv_estimator == "grpo" else "no-std"
    plot_lines(ctx.path("grpo_reward.png"), {"reward mean": (steps, [r["reward_mean"] for r in train_rows]),
                                             "zero-std groups": (steps, [r["frac_zero_std"] for r in train_rows])},
               xlabel="step", ylabel="value", title=f"GRPO ({cfg.rollout.backend}, {mode})")
    evals_at = [r for r in rows if "eval_accuracy" in r]
    keys = sorted({k for r in evals_at for k in r if k.startswith("eval_") and "accuracy" in k})
    plot_lines(ctx.path("grpo_accuracy.png"),
               {k.removeprefix("eval_"): ([r["step"] for r in evals_at if k in r], [r[k] for r in evals_at if k in r])
                for k in keys}, xlabel="step", ylabel="eval accuracy")
