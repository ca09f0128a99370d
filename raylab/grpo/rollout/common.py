"""What the rollout backends share: sampling settings, the completion record, and weight transport.

Weights travel as the bytes of a `torch.save`d state dict (Hugging Face parameter names, LoRA already merged):
one blob put in Ray's object store reaches every worker, and vLLM's engine process receives the same bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch

BACKENDS = ("hf", "torch", "vllm")


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are drawn: K per prompt, at most `max_new_tokens` each."""
    num_generations: int = 8
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class Completion:
    """One sampled answer: token ids, and the log-prob the rollout engine gave each of its tokens."""
    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    text: str
    finished: bool = field(default=True)  # ended with the end-of-sequence token rather than the length limit


def pack_weights(state_dict: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, buf)
    return buf.getvalue()


def unpack_weights(blob: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(blob), weights_only=True)


def make_rollout(backend: str, model: str, seed: int = 0, **options):
    """A rollout backend by name; `options` go to its constructor (vLLM engine settings, dtype...)."""
    if backend == "hf":
        from raylab.grpo.rollout.hf import HFRollout

        return HFRollout(model, seed=seed, **options)
    if backend == "torch":
        from raylab.grpo.rollout.torch_decoder import TorchRollout

        return TorchRollout(model, seed=seed, **options)
    if backend == "vllm":
        from raylab.grpo.rollout.vllm import VLLMRollout

        return VLLMRollout(model, seed=seed, **options)
    raise ValueError(f"rollout backend {backend!r}: expected one of {BACKENDS}")
