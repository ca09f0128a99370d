"""The GRPO policy loss (pure torch): clipped importance ratios, a KL penalty to a reference policy, and the
three loss aggregations of verl. All inputs are per completion token, shaped [num_sequences, num_tokens], with
`mask` 1 on completion tokens and 0 on padding.

Per token t of sequence i, with ratio rho = exp(logp - old_logp) and advantage A_i:

    pg_t   = max(-A_i rho, -A_i clip(rho, 1 - clip_ratio_low, 1 + clip_ratio_high))
    dual-clip (clip_ratio_c = c > 1, for A_i < 0 only): pg_t = min(pg_t, -A_i c), so a token whose ratio has run
             far above 1 on a bad answer cannot push the loss without bound (Ye et al. 2020; verl's clip_ratio_c)
    importance-sampling correction (`is_weights` w_t, e.g. min(exp(old_logp - rollout_logp), cap) when the rollout
             engine's distribution differs from the learner's, as with bf16 vLLM): pg_t <- w_t pg_t
    kl_t   = k1: logp - ref_logp        k3: exp(ref_logp - logp) - (ref_logp - logp) - 1   (Schulman's estimators)
    loss_t = pg_t + kl_coef * kl_t      (the KL term only when kl_in_loss; `kl_in_reward` instead lowers rewards)

Aggregations (`loss_agg_mode`) over the whole batch of N sequences, L_i completion tokens each:

    token-mean                sum_{i,t} loss_t / sum_i L_i
    seq-mean-token-mean       1/N sum_i (sum_t loss_t / L_i)
    seq-mean-token-sum-norm   sum_{i,t} loss_t / (N * max_len)      (Dr. GRPO: a constant normaliser)

`aggregate` takes the batch totals, so a micro-batch returns its share and the shares of all micro-batches add up
to the full-batch loss: gradient accumulation gives the same gradient as one big batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_TYPES = ("k1", "k3")


@dataclass(frozen=True)
class BatchTotals:
    """Normalisers of the full batch: number of sequences, of completion tokens, and the max completion length."""
    num_sequences: int
    num_tokens: int
    max_len: int

    @staticmethod
    def of(mask: torch.Tensor, max_len: int | None = None) -> "BatchTotals":
        return BatchTotals(mask.shape[0], int(mask.sum().item()), max_len or mask.shape[1])


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi."""
    if kl_type == "k1":
        return logp - ref_logp
    if kl_type == "k3":
        delta = ref_logp - logp
        return torch.exp(delta) - delta - 1
    raise ValueError(f"kl_loss_type {kl_type!r}: expected one of {KL_TYPES}")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, totals: BatchTotals) -> torch.Tensor:
    """This micro-batch's share of the batch aggregate of per-token `values` (see the module docstring)."""
    masked = values * mask
    if mode == "token-mean":
        return masked.sum() / max(totals.num_tokens, 1)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_seq.sum() / totals.num_sequences
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (totals.num_sequences * totals.max_len)
    raise ValueError(f"loss_agg_mode {mode!r}: expected one of {AGG_MODES}")


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2, ref_logp: torch.Tensor | None = None,
                kl_coef: float = 0.0, kl_type: str = "k3", loss_agg_mode: str = "token-mean",
                clip_ratio_c: float | None = None, is_weights: torch.Tensor | None = None,
                totals: BatchTotals | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and its statistics (clip fraction, KL, ratio), all as this micro-batch's share.

    `advantages` is one value per sequence ([N]) or per token ([N, T]); `ref_logp` is needed when kl_coef > 0.
    """
    totals = totals or BatchTotals.of(mask)
    mask = mask.to(logp.dtype)
    adv = advantages[:, None] if advantages.ndim == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    pg_unclipped, pg_clipped = -adv * ratio, -adv * clipped
    per_token = torch.maximum(pg_unclipped, pg_clipped)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1:
            raise ValueError(f"clip_ratio_c: the dual-clip bound must be > 1 (got {clip_ratio_c})")
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * clip_ratio_c), per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    stats = {
        "pg_loss": aggregate(per_token, mask, loss_agg_mode, totals).detach(),
        "clip_frac": aggregate((pg_clipped > pg_unclipped).to(logp.dtype), mask, "token-mean", totals).detach(),
        "ratio_mean": aggregate(ratio.detach(), mask, "token-mean", totals),
    }
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs the reference log-probs (ref_logp)")
        kl = kl_estimate(logp, ref_logp, kl_type)
        per_token = per_token + kl_coef * kl
        stats["kl"] = aggregate(kl.detach(), mask, "token-mean", totals)
    return aggregate(per_token, mask, loss_agg_mode, totals), stats
