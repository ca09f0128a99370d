"""What the rollout backends share: sampling settings, the completion record, and weight transport.

Weights travel as a dict of numpy arrays (Hugging Face parameter names, LoRA already merged): one object put in
Ray's object store reaches every worker without a copy, and vLLM's worker receives the same dict.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
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


def pack_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype, numpy array). Numpy arrays cross Ray's object store without a copy or a serialisation
    pass (pickle protocol 5 buffers), which torch.save bytes do not; bfloat16, which numpy lacks, travels as its
    raw 16 bits."""
    packed = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        packed[name] = (str(tensor.dtype).removeprefix("torch."), raw.numpy())
    return packed


def unpack_weights(packed: dict[str, tuple[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Tensors viewing the packed arrays (read-only when they come from the object store: load them with
    `load_state_dict`, which copies, rather than writing into them)."""
    with warnings.catch_warnings():  # torch warns about read-only arrays; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        tensors = {name: torch.from_numpy(array) for name, (_, array) in packed.items()}
    return {name: t.view(torch.bfloat16) if packed[name][0] == "bfloat16" else t for name, t in tensors.items()}


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
