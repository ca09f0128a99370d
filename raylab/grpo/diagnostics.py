"""The seed's diagnostics on a language model (pure torch, no Ray): per-question success probability and reward
variance, gradients of each question's objective, their pairwise cosines, and the curvature along an update.

For a question q_i whose reward is 1 exactly when the completion is the reference answer, the objective
J_i(theta) = pi*_i = P(answer tokens, then end-of-sequence | q_i) is the probability of one token sequence, so it
and its gradient are exact (one forward and backward, no sampling). Then:

    reward variance      pi*_i (1 - pi*_i)                       (what std normalisation divides by, square-rooted)
    gradient cosines     |cos(grad J_i, grad J_j)| over pairs i < j  (the seed: mean 0.088 +- 0.064 on GSM8K)
    curvature            ||H_i u|| with H_i = Hess J_i and u the unit update direction, by central differences
                         (grad J_i(theta + eps u) - grad J_i(theta - eps u)) / (2 eps)

    probs = success_probs(model, tokenizer, examples)
    grads = question_gradients(model, tokenizer, examples)          # [n, P]
    curv = curvature_along(model, tokenizer, examples, direction)   # [n]
    r, p = pearson(probs * (1 - probs), curv)

The seed correlates the curvature with the reward variance at the same iteration (Pearson 0.342, p < 0.01) and at
different iterations (-0.028, n.s.); `pearson` gives both r and its two-sided p-value.
"""
from __future__ import annotations

import math

import torch

from raylab.grpo.policy import pad_sequences, token_logprobs


def _answer_ids(tokenizer, examples: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    prompts = [tokenizer(e["prompt"], add_special_tokens=False)["input_ids"] for e in examples]
    answers = [tokenizer(e["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for e in examples]
    return prompts, answers


def success_logprobs(model, tokenizer, examples: list[dict], temperature: float = 1.0) -> torch.Tensor:
    """log pi*_i for each example (differentiable in the model's parameters), [n]."""
    prompts, answers = _answer_ids(tokenizer, examples)
    ids, attn, mask = pad_sequences(prompts, answers, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    logp = token_logprobs(model, ids.to(device), attn.to(device), temperature)
    return (logp * mask.to(device)).sum(1)


@torch.no_grad()
def success_probs(model, tokenizer, examples: list[dict], temperature: float = 1.0) -> torch.Tensor:
    return success_logprobs(model, tokenizer, examples, temperature).exp().cpu()


def _params(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def question_gradients(model, tokenizer, examples: list[dict], temperature: float = 1.0) -> torch.Tensor:
    """grad J_i = grad pi*_i for each example, flattened over the trainable parameters: [n, P]."""
    params, rows = _params(model), []
    for example in examples:
        prob = success_logprobs(model, tokenizer, [example], temperature).exp()[0]
        grads = torch.autograd.grad(prob, params, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    return torch.stack(rows).cpu()


def pairwise_abs_cosines(grads: torch.Tensor) -> torch.Tensor:
    """|cos| of every pair i < j of rows (rows with a zero gradient are left out)."""
    norms = grads.norm(dim=1)
    unit = grads[norms > 0] / norms[norms > 0, None]
    cos = unit @ unit.T
    i, j = torch.triu_indices(len(unit), len(unit), offset=1)
    return cos[i, j].abs()


@torch.no_grad()
def _shift(model, direction: torch.Tensor, scale: float) -> None:
    offset = 0
    for p in _params(model):
        p.add_(direction[offset: offset + p.numel()].view_as(p).to(p.device), alpha=scale)
        offset += p.numel()


def curvature_along(model, tokenizer, examples: list[dict], direction: torch.Tensor, eps: float = 1e-3,
                    temperature: float = 1.0) -> torch.Tensor:
    """||Hess J_i u|| for each example, u = direction / ||direction||, by central differences of grad J_i at
    theta +- eps u; the model's weights are restored afterwards."""
    unit = direction / direction.norm().clamp(min=1e-30)
    saved = [p.detach().clone() for p in _params(model)]
    try:
        _shift(model, unit, eps)
        plus = question_gradients(model, tokenizer, examples, temperature)
        _shift(model, unit, -2 * eps)
        minus = question_gradients(model, tokenizer, examples, temperature)
    finally:
        with torch.no_grad():  # copied back, not shifted back: + eps - 2 eps + eps is not 0 in floating point
            for p, value in zip(_params(model), saved):
                p.copy_(value)
    return ((plus - minus) / (2 * eps)).norm(dim=1)


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in _params(model)])


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (scipy), nan for fewer than 3 points or a constant input."""
    from scipy import stats

    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan, math.nan
    result = stats.pearsonr(x.numpy(), y.numpy())
    return float(result.statistic), float(result.pvalue)
