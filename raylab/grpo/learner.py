"""The GRPO learner (torch, transformers, peft; no Ray): one policy update per call on a batch of completions.

    learner = Learner("assets/tiny_policy", LearnerConfig(lr=1e-4, optimizer="sgd", lora=LoraConfig(rank=8)))
    metrics = learner.train_step(prompt_ids, completion_ids, advantages, rollout_logprobs)
    packed = pack_weights(learner.export_weights())        # full HF weights, LoRA merged, for the rollout workers

Full fine-tuning or LoRA (peft: rank, alpha, target modules), gradient accumulation over micro-batches (the loss
shares of `raylab.grpo.loss.aggregate` add up to the full-batch loss), gradient checkpointing, bf16 autocast on
CUDA. The log-probs of the sampling policy ("old" log-probs) are recomputed by the learner: with one update per
batch they come from the training forward itself (ratio 1), with more they come from a no-grad pass first. The
reference policy for the KL term is the frozen initial model (with LoRA: the base model, adapters disabled) and
is built only when kl_coef > 0. A non-finite loss raises `NonFiniteLossError` before any weight changes.
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from pathlib import Path

import torch

from raylab.grpo.loss import BatchTotals, policy_loss
from raylab.grpo.optim import LearnerConfig, build_optimizer, lr_factor, set_lr
from raylab.grpo.policy import load_policy, pad_sequences, token_logprobs

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # a peft folder, as vLLM's LoRA loader reads it


class NonFiniteLossError(ValueError):
    """The loss or the gradient norm became NaN or infinite; the weights and the last checkpoint are left as
    they were. `metric` names which ("loss" or "grad_norm"), `value` is what it was."""

    def __init__(self, message: str, metric: str = "loss", value: float = float("nan")):
        super().__init__(message)
        self.metric, self.value = metric, value

    def __reduce__(self):  # crosses Ray's process boundary with its fields
        return type(self), (str(self), self.metric, self.value)


class Learner:
    """`config`: the learner's settings (`raylab.grpo.optim.LearnerConfig`); the keywords are the loss's
    (`raylab.grpo.loss.policy_loss`) and the batch's facts. `total_steps`: the run's training steps, which the
    linear and cosine schedules decay over."""

    def __init__(self, model: str, config: LearnerConfig | None = None, *, clip_ratio_low: float = 0.2,
                 clip_ratio_high: float = 0.2, clip_ratio_c: float | None = None, kl_coef: float = 0.0,
                 kl_loss_type: str = "k3", kl_in_reward: bool = False, loss_agg_mode: str = "token-mean",
                 is_cap: float | None = None, max_new_tokens: int | None = None, temperature: float = 1.0,
                 pad_token_id: int = 0, total_steps: int | None = None, seed: int = 0, device: str | None = None):
        cfg = self.config = config or LearnerConfig()
        torch.manual_seed(seed)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.autocast_bf16 = cfg.bf16 and self.device.type == "cuda"
        model_obj = load_policy(model, gradient_checkpointing=cfg.gradient_checkpointing)
        self.lora = cfg.lora.rank > 0
        if self.lora:
            from peft import LoraConfig, get_peft_model

            if cfg.gradient_checkpointing:
                model_obj.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input
            model_obj = get_peft_model(model_obj, LoraConfig(
                r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                target_modules=cfg.lora.target_modules or "all-linear"))
        self.model = model_obj.to(self.device)
        self.model.train()
        self.ref_model = None
        if kl_coef > 0 and not self.lora:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], cfg)
        self.total_steps = total_steps
        lr_factor(cfg.schedule, 0, cfg.warmup_steps, total_steps)  # a schedule without its horizon fails here
        # with kl_in_reward the trainer lowers the rewards by kl_coef * KL and the loss has no KL term
        self.loss_options = dict(clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high,
                                 clip_ratio_c=clip_ratio_c, kl_coef=0.0 if kl_in_reward else kl_coef,
                                 kl_type=kl_loss_type, loss_agg_mode=loss_agg_mode)
        self.max_new_tokens, self.temperature, self.pad_token_id = max_new_tokens, temperature, pad_token_id
        self.is_cap = is_cap
        self.updates = 0  # optimizer updates
        self.steps = 0  # train_step calls: the schedule's clock

    # --- log-probs -------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _ref_context(self):
        """The reference policy: the frozen copy, or the LoRA model with its adapters switched off."""
        return self.model.disable_adapter() if self.lora else contextlib.nullcontext()

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], reference: bool = False):
        """Per completion token log-probs [N, T] (zero off the completion) under the policy or the reference."""
        ids, attn, mask = pad_sequences(prompt_ids, completion_ids, self.pad_token_id)
        ids, attn, mask = ids.to(self.device), attn.to(self.device), mask.to(self.device)
        out = []
        for lo in range(0, len(ids), self.config.micro_batch_size):
            sl = slice(lo, lo + self.config.micro_batch_size)
            model = self.ref_model if reference and self.ref_model is not None else self.model
            with self._autocast(), (self._ref_context() if reference else contextlib.nullcontext()):
                out.append(token_logprobs(model, ids[sl], attn[sl], self.temperature) * mask[sl])
        return torch.cat(out).cpu(), mask.cpu()

    def sequence_kl(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[float]:
        """Sum over each completion of the k1 estimate log pi - log pi_ref (for kl_in_reward)."""
        logp, mask = self.logprobs(prompt_ids, completion_ids)
        ref, _ = self.logprobs(prompt_ids, completion_ids, reference=True)
        return ((logp - ref) * mask).sum(1).tolist()

    # --- the update ------------------------------------------------------------------------------------------
    def train_step(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], advantages: list[float],
                   rollout_logprobs: list[list[float]] | None = None,
                   loss_rows: list[bool] | None = None) -> dict[str, float]:
        """ppo_epochs x mini_batches optimizer steps on the batch; returns the step's statistics.

        `rollout_logprobs`: the sampling engine's log-probs, for the logged gap and, with `is_cap`, the truncated
        importance weights min(exp(learner - rollout), is_cap) on each token. `loss_rows`: False leaves a
        completion out of the loss and its normaliser (how truncated completions are masked)."""
        start = time.perf_counter()
        lr = set_lr(self.optimizer, self.config, self.steps, self.total_steps)
        ids, attn, mask = pad_sequences(prompt_ids, completion_ids, self.pad_token_id)
        lengths = [len(p) for p in prompt_ids]
        rollout = None
        if rollout_logprobs is not None:
            rollout = torch.zeros_like(mask)
            for i, (lp, p) in enumerate(zip(rollout_logprobs, lengths)):
                rollout[i, p: p + len(lp)] = torch.tensor(lp)
        loss_mask = mask if loss_rows is None else mask * torch.tensor(loss_rows, dtype=mask.dtype)[:, None]
        adv = torch.tensor(advantages, dtype=torch.float32)
        recompute = self.config.ppo_epochs * self.config.mini_batches > 1
        old = self.logprobs(prompt_ids, completion_ids)[0] if recompute else None
        ref = self.logprobs(prompt_ids, completion_ids, reference=True)[0] if self.loss_options["kl_coef"] > 0 else None
        # the pre-update learner log-probs: the no-grad pass, or (one update) the training forward itself
        learner_logp = old if recompute else torch.zeros_like(mask)
        sums = {}
        for _ in range(self.config.ppo_epochs):
            for part in torch.arange(len(ids)).chunk(self.config.mini_batches):
                # Dr. GRPO's constant normaliser is the completion budget, not the padded prompt+completion width
                totals = BatchTotals.of(loss_mask[part], self.max_new_tokens or int(mask.sum(1).max()))
                self.optimizer.zero_grad(set_to_none=True)
                for micro in part.split(self.config.micro_batch_size):
                    stats, logp = self._accumulate(ids[micro], attn[micro], loss_mask[micro], adv[micro],
                                                   None if old is None else old[micro],
                                                   None if ref is None else ref[micro], totals,
                                                   None if rollout is None else rollout[micro])
                    if not recompute:
                        learner_logp[micro] = logp * mask[micro]
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v / (self.config.ppo_epochs * self.config.mini_batches)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.config.max_grad_norm)
                if not torch.isfinite(grad_norm):
                    self.optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(f"gradient norm is {grad_norm.item()} at update {self.updates}; "
                                             "weights left unchanged (lower the learning rate?)", "grad_norm",
                                             grad_norm.item())
                self.optimizer.step()
                self.updates += 1
                updates = self.config.ppo_epochs * self.config.mini_batches
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.item() / updates
        self.steps += 1
        sums["lr"] = lr
        tokens = int(mask.sum().item())
        sums["learner_tokens_per_s"] = tokens * self.config.ppo_epochs / max(time.perf_counter() - start, 1e-9)
        if rollout_logprobs is not None:
            sums.update(logprob_gap(rollout_logprobs, learner_logp, mask, lengths))
        return sums

    def _accumulate(self, ids, attn, mask, adv, old, ref, totals, rollout) -> tuple[dict[str, float], torch.Tensor]:
        """Forward and backward of one micro-batch; returns its statistics and its (detached) log-probs."""
        ids, attn, mask, adv = ids.to(self.device), attn.to(self.device), mask.to(self.device), adv.to(self.device)
        with self._autocast():
            logp, entropy = token_logprobs(self.model, ids, attn, self.temperature, with_entropy=True)
        # on-policy single update: the batch was sampled from exactly these weights, so old = current
        old = logp.detach() if old is None else old.to(self.device)
        is_weights = None
        if self.is_cap is not None and rollout is not None:
            is_weights = torch.exp(old - rollout.to(self.device)).clamp(max=self.is_cap) * mask
        loss, stats = policy_loss(logp, old, adv, mask, ref_logp=None if ref is None else ref.to(self.device),
                                  is_weights=is_weights, totals=totals, **self.loss_options)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"loss is {loss.item()} at update {self.updates}; weights left unchanged "
                                     "(lower the learning rate or check the rewards)", "loss", loss.item())
        loss.backward()
        out = {k: v.item() for k, v in stats.items()}
        out["loss"] = loss.item()
        out["entropy"] = ((entropy.detach() * mask).sum() / max(totals.num_tokens, 1)).item()
        return out, logp.detach().cpu()

    # --- weights and checkpoints -----------------------------------------------------------------------------
    @torch.no_grad()
    def export_weights(self) -> dict[str, torch.Tensor]:
        """Full policy weights with Hugging Face names (LoRA merged into a copy), on CPU, for the rollout side."""
        if not self.lora:
            return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        merged = copy.deepcopy(self.model).merge_and_unload()
        return {k: v.detach().cpu() for k, v in merged.state_dict().items()}

    def export_adapter(self) -> dict[str, bytes]:
        """The peft adapter folder `save_pretrained` writes (adapter_config.json, adapter_model.safetensors) as
        file name -> contents: what an adapter-only sync sends to a LoRA-enabled vLLM engine."""
        if not self.lora:
            raise ValueError("rollout.lora_sync: adapter needs LoRA in the learner (learner.lora.rank > 0)")
        with tempfile.TemporaryDirectory(prefix="raylab-adapter-") as folder:
            self.model.save_pretrained(folder)
            return {name: (Path(folder) / name).read_bytes() for name in ADAPTER_FILES}

    def save_pretrained(self, path: str) -> None:
        """A Hugging Face folder of the policy: the full model, or with LoRA the peft adapters only."""
        self.model.save_pretrained(path)

    def state_dict(self) -> dict:
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                   if not self.lora or k in trainable}
        # a copy: the optimizer's own state tensors keep changing in place after this call
        return {"weights": weights, "optimizer": copy.deepcopy(self.optimizer.state_dict()), "updates": self.updates,
                "steps": self.steps, "rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        missing = self.model.load_state_dict(state["weights"], strict=not self.lora)
        if self.lora and missing.unexpected_keys:
            raise ValueError(f"checkpoint has weights this learner lacks: {missing.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.steps = state["updates"], state["steps"]
        torch.set_rng_state(state["rng"])


def logprob_gap(rollout_logprobs: list[list[float]], learner_logp: torch.Tensor, mask: torch.Tensor,
                prompt_lengths: list[int]) -> dict[str, float]:
    """Mean and max |rollout log-prob - learner log-prob| over completion tokens (0 when weights are in sync)."""
    gaps = []
    for i, (lp, p) in enumerate(zip(rollout_logprobs, prompt_lengths)):
        gaps.append((torch.tensor(lp) - learner_logp[i, p: p + len(lp)]).abs())
    flat = torch.cat(gaps) if gaps else torch.zeros(1)
    return {"logprob_gap_mean": flat.mean().item(), "logprob_gap_max": flat.max().item()}
