"""Training the tiny MDLM: the masked diffusion loss, the learning-rate schedule and the accuracy. Pure torch.

MDLM loss for a prompt x_p and answer x_0 of length n: draw t ~ U(0, 1) per sequence, mask each answer token
independently with probability t (the prompt stays clean, as in conditional MDLM / LLaDA fine-tuning), and take

    loss = E_t [ (1/t) * sum_{i masked} -log p(x_0^i | x_t) ] / n,

an upper bound on the answer's negative log-likelihood. The training loop (the optimisation step, checkpoints,
evaluation) is the experiment raylab/experiments/mdlm_train.py: `raylab run experiments/mdlm_train.yaml`.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

T_MIN = 1e-3  # keeps the 1/t weight finite


def mdlm_loss(model, prompt: torch.Tensor, answer: torch.Tensor, mask_token_id: int,
              generator: torch.Generator) -> torch.Tensor:
    B, n = answer.shape
    t = torch.rand(B, 1, generator=generator).clamp(min=T_MIN)
    masked = torch.rand(B, n, generator=generator) < t
    noisy = torch.where(masked, mask_token_id, answer)
    logits = model(torch.cat([prompt, noisy], dim=1))[:, prompt.shape[1]:]
    ce = F.cross_entropy(logits.reshape(B * n, -1), answer.reshape(-1), reduction="none").view(B, n)
    return ((ce * masked) / t).sum(dim=1).mean() / n


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def accuracy(predicted: torch.Tensor, answer: torch.Tensor) -> float:
    """Fraction of sequences whose whole answer is right."""
    return float((predicted == answer).all(dim=1).double().mean())
