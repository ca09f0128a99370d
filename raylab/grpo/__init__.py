"""GRPO post-training: group advantages, losses, rewards, the log-linear bandit theory, learner and rollouts.

The pure parts (no Ray, no vLLM at import time) are importable in a notebook:

    from raylab.grpo import group_advantages, policy_loss
    adv = group_advantages(rewards.view(num_questions, K), mode="std")     # std, no_std, rloo, dr_grpo, pg

`raylab.grpo.learner` (torch/transformers/peft) and `raylab.grpo.rollout` (hf, vllm) hold the models;
`raylab.grpo.actors` and `raylab.grpo.trainer` put them on Ray; the experiment is `raylab.experiments.grpo`.
"""
from raylab.grpo.advantages import curvature_diagnostic, group_advantages
from raylab.grpo.loss import policy_loss

__all__ = ["curvature_diagnostic", "group_advantages", "policy_loss"]
