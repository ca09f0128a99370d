"""Rollout backends: they sample K completions per prompt and take new policy weights in place.

    hf    transformers `generate` (`raylab.grpo.rollout.hf.HFRollout`), runs anywhere torch runs
    torch raylab's own KV-cached sampler over a Llama-family model's weights
          (`raylab.grpo.rollout.torch_decoder.TorchRollout`): the same distribution, less overhead per token
    vllm  vLLM's engine (`raylab.grpo.rollout.vllm.VLLMRollout`); vllm is imported only when one is built

All return `Completion` records with the sampling log-prob of every generated token, take weights as
`pack_weights` output (numpy arrays under Hugging Face names), and score a fixed completion with
`score`, which is how the weight-sync tests compare them with the learner.
"""
from raylab.grpo.rollout.common import BACKENDS, Completion, SamplingConfig, make_rollout, pack_weights, unpack_weights

__all__ = ["BACKENDS", "Completion", "SamplingConfig", "make_rollout", "pack_weights", "unpack_weights"]
