"""The GRPO trainer: rollout workers and a learner as Ray actors, driven one step at a time.

One step: draw `prompts_per_step` questions (a fixed function of seed and step, so a resumed run draws the
same ones), split them over the rollout workers, sample K answers each, score them with the reward function,
turn rewards into group advantages, update the learner, and send the new weights to every worker. Each step's
metrics include the reward statistics, the curvature diagnostic of `raylab.grpo.advantages`, the learner's
statistics (KL, clip fraction, entropy, grad norm) and the rollout-vs-learner log-prob gap, which stays near 0
as long as every worker holds the learner's weights.

    trainer = GRPOTrainer(cfg, train_examples, eval_examples, reward_fn)      # cfg: raylab.experiments.grpo.Config
    for step in range(cfg.steps):
        metrics = trainer.step(step)
"""
from __future__ import annotations

import random
import time

import ray
import torch

from raylab.grpo.actors import build_learner, build_rollout_workers
from raylab.grpo.advantages import curvature_diagnostic, group_advantages, mode_from_config
from raylab.grpo.policy import load_tokenizer
from raylab.grpo.rollout.common import SamplingConfig


def unwrap_errors(refs):
    """ray.get that re-raises a user-facing error (bad value, NaN loss) from an actor as itself, in one line."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ValueError):
            raise err.cause from None
        raise


def learner_options(cfg, pad_token_id: int) -> dict:
    """Keyword arguments of `raylab.grpo.learner.Learner` from the experiment config."""
    lc, alg = cfg.learner, cfg.algorithm
    return dict(lr=lc.lr, weight_decay=lc.weight_decay, max_grad_norm=lc.max_grad_norm, lora_rank=lc.lora.rank,
                lora_alpha=lc.lora.alpha, lora_target_modules=lc.lora.target_modules, lora_dropout=lc.lora.dropout,
                micro_batch_size=lc.micro_batch_size, ppo_epochs=lc.ppo_epochs, mini_batches=lc.mini_batches,
                gradient_checkpointing=lc.gradient_checkpointing, bf16=lc.bf16,
                clip_ratio_low=alg.clip_ratio_low, clip_ratio_high=alg.clip_ratio_high, kl_coef=alg.kl_coef,
                kl_loss_type=alg.kl_loss_type, kl_in_reward=alg.kl_in_reward, loss_agg_mode=alg.loss_agg_mode,
                max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                pad_token_id=pad_token_id, seed=cfg.seed)


class GRPOTrainer:
    def __init__(self, cfg, train_examples: list[dict], eval_examples: list[dict], reward_fn,
                 actor_cpus=lambda n: n):
        self.cfg, self.reward_fn = cfg, reward_fn
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.adv_mode = mode_from_config(cfg.algorithm.adv_estimator, cfg.algorithm.norm_adv_by_std_in_grpo)
        ro = cfg.rollout
        self.sampling = SamplingConfig(ro.num_generations, ro.max_new_tokens, ro.temperature, ro.top_p)
        pad_id = load_tokenizer(cfg.policy.model).pad_token_id
        if ro.backend == "vllm":
            options = ro.vllm.model_dump()
        else:
            options = {"device": "cuda" if ro.gpus_per_worker > 0 else "cpu"}
        self.workers = build_rollout_workers(ro.num_workers, ro.backend, cfg.policy.model, self.sampling,
                                             cpus=actor_cpus(ro.cpus_per_worker), gpus=ro.gpus_per_worker,
                                             seed=cfg.seed, options=options, threads=ro.threads)
        self.learner = build_learner(cfg.policy.model, cpus=actor_cpus(cfg.learner.cpus), gpus=cfg.learner.gpus,
                                     options=learner_options(cfg, pad_id), threads=cfg.learner.threads)
        self.weights_version = 0

    # --- rollouts --------------------------------------------------------------------------------------------
    def _generate(self, prompts: list[str], seed: int, sampling: SamplingConfig | None = None):
        """Completions of all prompts, split over the workers; prompt_index refers to `prompts`."""
        chunks = [c for c in _split(list(range(len(prompts))), len(self.workers)) if c]
        refs = [w.generate.remote([prompts[i] for i in c], seed, sampling) for w, c in zip(self.workers, chunks)]
        out = []
        for chunk, completions in zip(chunks, unwrap_errors(refs)):
            for c in completions:
                c.prompt_index = chunk[c.prompt_index]
                out.append(c)
        return out

    def _send_weights(self) -> list:
        """Queues the learner's export and every worker's load (one object, fetched by each); returns the loads'
        refs. Queued, not awaited: each actor runs its tasks in order, so an export queued behind a train step
        exports the updated weights, and the driver waits for nothing in between."""
        self.weights_version += 1
        weights = self.learner.export_weights.remote()
        return [w.load_weights.remote(weights, self.weights_version) for w in self.workers]

    def sync_weights(self) -> float:
        """Sends the learner's current weights to every worker and waits for them; returns seconds."""
        start = time.perf_counter()
        unwrap_errors(self._send_weights())
        return time.perf_counter() - start

    def batch_prompts(self, step: int) -> list[dict]:
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        return [self.train_examples[rng.randrange(len(self.train_examples))] for _ in range(self.cfg.prompts_per_step)]

    # --- one step --------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        examples = self.batch_prompts(step)
        completions = self._generate([e["prompt"] for e in examples], seed=step)
        rollout_s = time.perf_counter() - start
        k = self.sampling.num_generations
        completions.sort(key=lambda c: c.prompt_index)  # groups of K, in prompt order
        rewards = torch.tensor(self.reward_fn([c.text for c in completions],
                                              [examples[c.prompt_index] for c in completions]), dtype=torch.float32)
        prompt_ids = [c.prompt_ids for c in completions]
        completion_ids = [c.completion_ids for c in completions]
        metrics = {}
        shaped = rewards
        if self.cfg.algorithm.kl_coef > 0 and self.cfg.algorithm.kl_in_reward:
            seq_kl = torch.tensor(unwrap_errors(self.learner.sequence_kl.remote(prompt_ids, completion_ids)))
            shaped = rewards - self.cfg.algorithm.kl_coef * seq_kl
            metrics["kl"] = seq_kl.mean().item()
        advantages = group_advantages(shaped.view(-1, k), self.adv_mode).flatten()
        learner_start = time.perf_counter()
        stats_ref = self.learner.train_step.remote(prompt_ids, completion_ids, advantages.tolist(),
                                                   [c.logprobs for c in completions])
        loads = self._send_weights()  # behind the update in the learner's queue (a failed update changes nothing)
        stats = unwrap_errors(stats_ref)
        learner_s = time.perf_counter() - learner_start
        unwrap_errors(loads)
        sync_s = time.perf_counter() - learner_start - learner_s
        tokens = sum(len(c) for c in completion_ids)
        metrics.update({
            "reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
            **curvature_diagnostic(rewards.view(-1, k), self.cfg.learner.lr, self.adv_mode),
            **{key: stats[key] for key in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "logprob_gap_mean",
                                           "logprob_gap_max", "learner_tokens_per_s") if key in stats},
            "completion_len_mean": tokens / len(completions),
            "finished_frac": sum(c.finished for c in completions) / len(completions),
            "rollout_tokens_per_s": tokens / max(rollout_s, 1e-9),
            "rollout_s": rollout_s, "learner_s": learner_s, "sync_s": sync_s,
            "step_s": time.perf_counter() - start,
        })
        return metrics

    def evaluate(self, examples: list[dict] | None = None) -> float:
        """Greedy accuracy (mean reward of one greedy answer per question) on the evaluation examples."""
        examples = examples if examples is not None else self.eval_examples
        greedy = SamplingConfig(1, self.sampling.max_new_tokens, temperature=0.0)
        completions = sorted(self._generate([e["prompt"] for e in examples], seed=0, sampling=greedy),
                             key=lambda c: c.prompt_index)
        rewards = self.reward_fn([c.text for c in completions], examples)
        return float(sum(rewards) / max(len(rewards), 1))

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"learner": unwrap_errors(self.learner.state_dict.remote()), "weights_version": self.weights_version}

    def load_state_dict(self, state: dict) -> None:
        unwrap_errors(self.learner.load_state_dict.remote(state["learner"]))
        self.weights_version = state["weights_version"] - 1
        self.sync_weights()

    def shutdown(self) -> None:
        for actor in [*self.workers, self.learner]:
            ray.kill(actor)


def _split(items: list, parts: int) -> list[list]:
    size, extra = divmod(len(items), parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + size + (i < extra)
        out.append(items[lo:hi])
        lo = hi
    return out
