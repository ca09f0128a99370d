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
from raylab.grpo.rollout import SamplingConfig


def unwrap_errors(refs):
    """ray.get that re-raises a user-facing error (bad value, NaN loss) from an actor as itself, in one line."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ValueError):
            raise err.cause from None
        raise


def learner_options(cfg, pad_token_id: int) -> dict:
    """The loss and batch keywords of `raylab.grpo.learner.Learner` (its settings are `cfg.learner` itself)."""
    alg = cfg.algorithm
    return dict(clip_ratio_low=alg.clip_ratio_low, clip_ratio_high=alg.clip_ratio_high, clip_ratio_c=alg.clip_ratio_c,
                kl_coef=alg.kl_coef, kl_loss_type=alg.kl_loss_type, kl_in_reward=alg.kl_in_reward,
                loss_agg_mode=alg.loss_agg_mode, is_cap=alg.is_cap, max_new_tokens=cfg.rollout.max_new_tokens,
                temperature=cfg.rollout.temperature, pad_token_id=pad_token_id, total_steps=cfg.steps,
                seed=cfg.seed)


class GRPOTrainer:
    def __init__(self, cfg, train_examples: list[dict], eval_examples: list[dict], reward_fn,
                 actor_cpus=lambda n: n):
        self.cfg, self.reward_fn = cfg, reward_fn
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.adv_mode = mode_from_config(cfg.algorithm.adv_estimator, cfg.algorithm.norm_adv_by_std_in_grpo)
        ro = cfg.rollout
        self.sampling = SamplingConfig(ro.num_generations, ro.max_new_tokens, ro.temperature, ro.top_p)
        self.tokenizer = load_tokenizer(cfg.policy.model)
        if ro.backend == "vllm":
            options = ro.vllm.model_dump()
            if ro.lora_sync == "adapter":
                options["lora_rank"] = cfg.learner.lora.rank  # a LoRA-enabled engine that keeps the base weights
        else:
            options = {"device": "cuda" if ro.gpus_per_worker > 0 else "cpu"}
        self.workers = build_rollout_workers(ro.num_workers, ro.backend, cfg.policy.model, self.sampling,
                                             cpus=actor_cpus(ro.cpus_per_worker), gpus=ro.gpus_per_worker,
                                             seed=cfg.seed, options=options, threads=ro.threads)
        self.learner = build_learner(cfg.policy.model, cfg.learner, cpus=actor_cpus(cfg.learner.cpus),
                                     options=learner_options(cfg, self.tokenizer.pad_token_id))

    # --- rollouts --------------------------------------------------------------------------------------------
    def _generate(self, prompts: list[str], seed: int, sampling: SamplingConfig | None = None):
        """Completions of all prompts, split over the workers, sorted into groups in prompt order; prompt_index
        refers to `prompts`."""
        chunks = [c for c in _split(list(range(len(prompts))), len(self.workers)) if c]
        refs = [w.generate.remote([prompts[i] for i in c], seed, sampling) for w, c in zip(self.workers, chunks)]
        out = []
        for chunk, completions in zip(chunks, unwrap_errors(refs)):
            for c in completions:
                c.prompt_index = chunk[c.prompt_index]
                out.append(c)
        return sorted(out, key=lambda c: c.prompt_index)

    def _scored(self, examples: list[dict], seed: int, sampling: SamplingConfig | None = None):
        """(completions in groups, rewards [len(examples), K]) for the examples' prompts."""
        completions = self._generate([e["prompt"] for e in examples], seed, sampling)
        rewards = self.reward_fn([c.text for c in completions], [examples[c.prompt_index] for c in completions])
        return completions, torch.tensor(rewards, dtype=torch.float32).view(len(examples), -1)

    def _send_weights(self) -> list:
        """Queues the learner's export and every worker's load (one object, fetched by each); returns the loads'
        refs, which give the bytes each worker received. Queued, not awaited: each actor runs its tasks in order,
        so an export queued behind a train step exports the updated weights, and the driver waits for nothing in
        between. `rollout.lora_sync=adapter` sends the peft adapter files instead of merged full weights."""
        if self.cfg.rollout.lora_sync == "adapter":
            adapter = self.learner.export_adapter.remote()
            return [w.load_adapter.remote(adapter) for w in self.workers]
        weights = self.learner.export_weights.remote()
        return [w.load_weights.remote(weights) for w in self.workers]

    def sync_weights(self) -> tuple[float, int]:
        """Sends the learner's current weights to every worker and waits for them; returns (seconds, bytes sent
        to each worker)."""
        start = time.perf_counter()
        sent = unwrap_errors(self._send_weights())
        return time.perf_counter() - start, sent[0]

    def batch_prompts(self, step: int, round: int = 0) -> list[dict]:
        """The questions of a step (round > 0: the refills of dynamic sampling), a fixed function of the seed."""
        rng = random.Random(self.cfg.seed * 1_000_003 + step + 100_003 * round)
        return [self.train_examples[rng.randrange(len(self.train_examples))] for _ in range(self.cfg.prompts_per_step)]

    def _sample_batch(self, step: int):
        """The step's groups: (examples, completions, rewards [n, K], every group's rewards as sampled). With
        dynamic sampling, groups whose K rewards are all equal (no gradient) are dropped and replaced by groups of
        fresh questions, up to `algorithm.dynamic_sampling` extra rounds (verl's filter_groups)."""
        examples = self.batch_prompts(step)
        completions, rewards = self._scored(examples, seed=step)
        sampled = rewards
        for extra in range(1, self.cfg.algorithm.dynamic_sampling + 1):
            live = (rewards.std(dim=1) > 0).tolist()
            if sum(live) >= self.cfg.prompts_per_step:
                break
            more = self.batch_prompts(step, extra)
            more_completions, more_rewards = self._scored(more, seed=step + 1_000_000 * extra)
            sampled = torch.cat([sampled, more_rewards])
            for c in more_completions:
                c.prompt_index += len(examples)
            examples, completions = examples + more, completions + more_completions
            rewards = torch.cat([rewards, more_rewards])
        if self.cfg.algorithm.dynamic_sampling:
            live = [i for i, v in enumerate((rewards.std(dim=1) > 0).tolist()) if v][: self.cfg.prompts_per_step]
            keep = {old: new for new, old in enumerate(live)}
            completions = [c for c in completions if c.prompt_index in keep]
            for c in completions:
                c.prompt_index = keep[c.prompt_index]
            examples, rewards = [examples[i] for i in live], rewards[live]
        return examples, completions, rewards, sampled

    # --- one step --------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        examples, completions, rewards, sampled = self._sample_batch(step)
        rollout_s = time.perf_counter() - start
        k = self.sampling.num_generations
        prompt_ids = [c.prompt_ids for c in completions]
        completion_ids = [c.completion_ids for c in completions]
        metrics = {}
        shaped = rewards
        if self.cfg.algorithm.kl_coef > 0 and self.cfg.algorithm.kl_in_reward and completions:
            seq_kl = torch.tensor(unwrap_errors(self.learner.sequence_kl.remote(prompt_ids, completion_ids)))
            shaped = rewards - self.cfg.algorithm.kl_coef * seq_kl.view(-1, k)
            metrics["kl"] = seq_kl.mean().item()
        learner_start = time.perf_counter()
        if completions:
            advantages = group_advantages(shaped, self.adv_mode).flatten()
            loss_rows = [c.finished for c in completions] if self.cfg.algorithm.mask_truncated else None
            stats_ref = self.learner.train_step.remote(prompt_ids, completion_ids, advantages.tolist(),
                                                       [c.logprobs for c in completions], loss_rows)
            loads = self._send_weights()  # behind the update in the learner's queue (a failed update changes nothing)
            stats = unwrap_errors(stats_ref)
            learner_s = time.perf_counter() - learner_start
            metrics["sync_bytes"] = unwrap_errors(loads)[0]
        else:  # dynamic sampling found no group with a gradient: nothing to learn from this step
            stats, learner_s = {}, 0.0
        sync_s = time.perf_counter() - learner_start - learner_s
        tokens = sum(len(c) for c in completion_ids)
        metrics.update({
            "reward_mean": sampled.mean().item(), "reward_std": sampled.std(unbiased=False).item(),
            **curvature_diagnostic(sampled, self.cfg.learner.lr, self.adv_mode),
            **{key: stats[key] for key in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "lr", "logprob_gap_mean",
                                           "logprob_gap_max", "learner_tokens_per_s") if key in stats},
            "completion_len_mean": tokens / max(len(completions), 1),
            "finished_frac": sum(c.finished for c in completions) / max(len(completions), 1),
            "rollout_tokens_per_s": tokens / max(rollout_s, 1e-9),
            "rollout_s": rollout_s, "learner_s": learner_s, "sync_s": sync_s,
            "step_s": time.perf_counter() - start,
        })
        if self.cfg.algorithm.dynamic_sampling:
            metrics.update(groups_sampled=len(sampled), groups_trained=len(examples))
        return metrics

    def evaluate(self, step: int = 0, examples: list[dict] | None = None) -> dict[str, float]:
        """Greedy accuracy (`eval_accuracy`: one greedy answer per question) and, with `eval_k` = k > 0, sampled
        pass@1 (mean reward of k samples at the rollout temperature) and pass@k (share of questions with a right
        answer among the k: the unbiased estimator with n = k); each also per difficulty (`eval_easy_accuracy`,
        `eval_hard_pass@8`, ...) when the examples carry easy/hard labels."""
        examples = examples if examples is not None else self.eval_examples
        greedy = SamplingConfig(1, self.sampling.max_new_tokens, temperature=0.0)
        results = {"greedy": self._scored(examples, seed=0, sampling=greedy)[1][:, 0]}
        k = self.cfg.eval_k
        if k:
            sampling = SamplingConfig(k, self.sampling.max_new_tokens, self.sampling.temperature, self.sampling.top_p)
            samples = self._scored(examples, seed=2_000_003 + step, sampling=sampling)[1]
        subsets = {"": list(range(len(examples)))}
        for label in ("easy", "hard"):
            members = [i for i, e in enumerate(examples) if e.get("difficulty") == label]
            if members:
                subsets[f"{label}_"] = members
        out = {}
        for prefix, members in subsets.items():
            out[f"eval_{prefix}accuracy"] = results["greedy"][members].mean().item()
            if k:
                out[f"eval_{prefix}pass@1"] = samples[members].mean().item()
                out[f"eval_{prefix}pass@{k}"] = (samples[members] > 0).any(dim=1).float().mean().item()
        return out

    def export(self, path) -> None:
        """A Hugging Face `save_pretrained` folder of the current policy (peft adapters only, for LoRA) with the
        tokenizer."""
        unwrap_errors(self.learner.save_pretrained.remote(str(path)))
        self.tokenizer.save_pretrained(str(path))

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"learner": unwrap_errors(self.learner.state_dict.remote())}

    def load_state_dict(self, state: dict) -> None:
        unwrap_errors(self.learner.load_state_dict.remote(state["learner"]))
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
