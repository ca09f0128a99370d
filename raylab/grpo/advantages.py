"""Group advantages for GRPO and its relatives (pure torch, no Ray).

For one question with K sampled answers and rewards r_1..r_K (mean r̄, population std σ = sqrt(mean (r - r̄)^2)):

    std      A_k = (r_k - r̄) / (σ + eps)              GRPO (verl: norm_adv_by_std_in_grpo=True)
    no_std   A_k =  r_k - r̄                           REINFORCE with a mean baseline (norm_adv_by_std_in_grpo=False)
    dr_grpo  A_k =  r_k - r̄                           Dr. GRPO: the same advantages as no_std; Dr. GRPO
                                                      differs from it only in the loss aggregation
                                                      (loss_agg_mode=seq-mean-token-sum-norm, a constant normaliser)
    rloo     A_k = (r_k - mean_{j!=k} r_j) = K/(K-1) (r_k - r̄)   leave-one-out baseline
    pg       A_k =  r_k                                plain stochastic policy gradient, no baseline

σ is the population std of the seed talk (1/K), so for 0/1 rewards σ = sqrt(p(1 - p)) with p the group's success
rate, and the std mode is the no-std update divided by sqrt(p(1 - p)): the curvature-adaptive step size that
`curvature_diagnostic` reports. (verl and TRL divide by the unbiased std, larger by sqrt(K/(K-1)).)
"""
from __future__ import annotations

import torch

MODES = ("std", "no_std", "rloo", "dr_grpo", "pg")


def group_advantages(rewards: torch.Tensor, mode: str = "std", eps: float = 1e-6) -> torch.Tensor:
    """Advantages of a [num_questions, K] reward matrix, one row per question's group of K answers."""
    if mode not in MODES:
        raise ValueError(f"advantage mode {mode!r}: expected one of {MODES}")
    if rewards.ndim != 2:
        raise ValueError(f"rewards: expected shape [num_questions, K] (got {tuple(rewards.shape)})")
    k = rewards.shape[1]
    if mode == "pg":
        return rewards.clone()
    if k < 2:
        raise ValueError(f"group size K={k}: mode {mode!r} needs at least 2 answers per question")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if mode == "std":
        return centered / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)
    if mode == "rloo":
        return centered * (k / (k - 1))
    return centered


def mode_from_config(adv_estimator: str, norm_adv_by_std_in_grpo: bool) -> str:
    """verl-style config names -> an advantage mode: `grpo` reads the std flag, the others name themselves."""
    if adv_estimator == "grpo":
        return "std" if norm_adv_by_std_in_grpo else "no_std"
    return adv_estimator


def curvature_diagnostic(rewards: torch.Tensor, lr: float, mode: str = "std", eps: float = 1e-6) -> dict[str, float]:
    """The seed's curvature view of a batch of rewards [num_questions, K].

    For 0/1 rewards the group's reward variance is p_i (1 - p_i), with p_i (the group's success rate) estimating
    pi*(q_i); it bounds the local curvature of J_i (||Hess J_i|| <= 4 X_max^2 p_i (1 - p_i)). The std mode divides
    the update by sqrt(p_i (1 - p_i)), an effective step size lr / sqrt(p_i (1 - p_i)): large where the curvature is
    small (hard and easy questions). Other modes step with lr itself. Groups with zero variance give no gradient
    and are left out of the step-size statistics.
    """
    var = rewards.float().var(dim=1, unbiased=False)
    live = var > eps
    if mode == "std":
        step = lr / var[live].sqrt()
    else:
        step = torch.full((int(live.sum()),), float(lr))
    return {
        "reward_var_mean": var.mean().item(),
        "effective_lr_mean": step.mean().item() if live.any() else 0.0,
        "effective_lr_max": step.max().item() if live.any() else 0.0,
        "frac_zero_std": 1.0 - live.float().mean().item(),
    }
