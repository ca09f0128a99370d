"""Rollout backends, and the registry that builds one by name. Each samples K completions per prompt and takes
new policy weights in place:

    hf    transformers `generate` (`raylab.grpo.rollout.hf.HFRollout`), runs anywhere torch runs
    torch raylab's own KV-cached sampler over a Llama-family model's weights
          (`raylab.grpo.rollout.torch_decoder.TorchRollout`): the same distribution, less overhead per token
    vllm  vLLM's engine (`raylab.grpo.rollout.vllm.VLLMRollout`); vllm is imported only when one is built

    rollout = make_rollout("torch", "assets/tiny_policy", seed=0)

All follow `raylab.grpo.rollout.common.RolloutBackend`: they return `Completion` records with the sampling
log-prob of every generated token, take weights as `pack_weights` output (numpy arrays under Hugging Face
names), and score a fixed completion with `score`, which is how the weight-sync tests compare them with the
learner. The backends import `common` (a leaf); only this registry imports the backends, each when asked for.
"""
from raylab.grpo.rollout.common import (
    Completion,
    RolloutBackend,
    SamplingConfig,
    pack_weights,
    packed_bytes,
    unpack_weights,
)

BACKENDS = ("hf", "torch", "vllm")


def make_rollout(backend: str, model: str, seed: int = 0, **options) -> RolloutBackend:
    """A rollout backend by name; `options` go to its constructor (vLLM engine settings, dtype, device...)."""
    if backend == "hf":
        from raylab.grpo.rollout.hf import HFRollout as cls
    elif backend == "torch":
        from raylab.grpo.rollout.torch_decoder import TorchRollout as cls
    elif backend == "vllm":
        from raylab.grpo.rollout.vllm import VLLMRollout as cls
    else:
        raise ValueError(f"rollout backend {backend!r}: expected one of {BACKENDS}")
    return cls(model, seed=seed, **options)


__all__ = ["BACKENDS", "Completion", "RolloutBackend", "SamplingConfig", "make_rollout", "pack_weights",
           "packed_bytes", "unpack_weights"]
