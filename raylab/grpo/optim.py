"""The learner's settings and what they build: the optimizer and the learning-rate schedule (pure torch, no Ray).

`LearnerConfig` and `LoraConfig` are the one definition of these settings: the experiment's config uses them as
its `learner:` field type (pydantic validates the dataclasses; `__post_init__` errors come back as one-line
errors naming the key), and `raylab.grpo.learner.Learner` takes them as they are.

    optimizer = build_optimizer(params, LearnerConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    set_lr(optimizer, cfg, step=10, total_steps=100)        # lr * lr_factor(...) on every parameter group

Optimizers: `adamw` (torch's fused AdamW) and `sgd` (plain gradient steps, optional heavy-ball momentum). The
seed's theory is about gradient steps: std normalisation divides the REINFORCE step by sqrt(p(1 - p)), which
AdamW's per-coordinate scaling partly undoes, so SGD is the optimizer that shows it.

Schedules, as a factor on `lr` at training step s (0-based) of S = `total_steps` (warm-up W = `warmup_steps`):

    constant   1                                   (after a linear warm-up when W > 0)
    linear     (s + 1) / W for s < W, then 1 - (1 - min_lr_ratio) (s - W) / (S - W - 1)
    cosine     (s + 1) / W for s < W, then min_lr_ratio + (1 - min_lr_ratio) (1 + cos(pi (s - W) / (S - W - 1))) / 2

A step is one `Learner.train_step` (one GRPO step), whatever its number of optimizer updates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import ConfigDict

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class LoraConfig:
    """LoRA adapters through peft; rank 0 means full fine-tuning."""
    __pydantic_config__ = ConfigDict(extra="forbid")

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None  # None: every linear layer

    def __post_init__(self):
        _check(self.rank >= 0, f"rank: must be >= 0, 0 meaning full fine-tuning (got {self.rank})")
        _check(self.alpha > 0, f"alpha: must be > 0 (got {self.alpha})")
        _check(0 <= self.dropout < 1, f"dropout: must lie in [0, 1) (got {self.dropout})")


@dataclass
class LearnerConfig:
    """How the learner updates the policy, and where it runs (cpus, gpus, threads: the Ray actor's share)."""
    __pydantic_config__ = ConfigDict(extra="forbid")

    lr: float = 1e-5
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # linear and cosine decay to lr * min_lr_ratio at the last step
    max_grad_norm: float = 1.0
    micro_batch_size: int = 64  # sequences per forward/backward (gradient accumulation)
    ppo_epochs: int = 1
    mini_batches: int = 1  # optimizer updates per rollout batch and epoch
    gradient_checkpointing: bool = False
    bf16: bool = True  # bf16 autocast on CUDA; ignored on CPU
    cpus: float = 1.0
    gpus: float = 0.0
    threads: int | None = None  # torch threads of the learner actor (None: its CPUs)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self):
        if isinstance(self.lora, dict):  # built by hand from plain data
            self.lora = LoraConfig(**self.lora)
        _check(self.optimizer in OPTIMIZERS, f"optimizer: unknown optimizer {self.optimizer!r}; expected one of "
               f"{', '.join(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, f"schedule: unknown schedule {self.schedule!r}; expected one of "
               f"{', '.join(SCHEDULES)}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"lr: must be a finite number > 0 (got {self.lr})")
        _check(0 <= self.momentum < 1, f"momentum: must lie in [0, 1) (got {self.momentum})")
        _check(self.momentum == 0 or self.optimizer == "sgd",
               f"momentum: only sgd takes a momentum (got {self.momentum} with optimizer {self.optimizer})")
        _check(self.weight_decay >= 0, f"weight_decay: must be >= 0 (got {self.weight_decay})")
        _check(self.warmup_steps >= 0, f"warmup_steps: must be >= 0 (got {self.warmup_steps})")
        _check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio: must lie in [0, 1] (got {self.min_lr_ratio})")
        _check(self.max_grad_norm > 0, f"max_grad_norm: must be > 0 (got {self.max_grad_norm})")
        for name in ("micro_batch_size", "ppo_epochs", "mini_batches"):
            _check(getattr(self, name) >= 1, f"{name}: must be >= 1 (got {getattr(self, name)})")
        _check(self.cpus >= 0 and self.gpus >= 0, f"cpus, gpus: must be >= 0 (got {self.cpus}, {self.gpus})")
        _check(self.threads is None or self.threads >= 1, f"threads: must be >= 1 (got {self.threads})")


def build_optimizer(params, cfg: LearnerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # the fused kernel updates every tensor in one pass: 3x faster than the per-tensor loop on a small model
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def lr_factor(schedule: str, step: int, warmup_steps: int = 0, total_steps: int | None = None,
              min_lr_ratio: float = 0.0) -> float:
    """The schedule's factor on lr at training step `step` (0-based); see the module docstring."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if not total_steps:
        raise ValueError(f"schedule {schedule!r}: needs the number of training steps (total_steps)")
    span = max(total_steps - warmup_steps - 1, 1)  # the last step reaches min_lr_ratio
    progress = min((step - warmup_steps) / span, 1.0)
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, cfg: LearnerConfig, step: int, total_steps: int | None) -> float:
    """Sets every parameter group's lr for training step `step`; returns it."""
    lr = cfg.lr * lr_factor(cfg.schedule, step, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
