"""What every rollout backend shares, and nothing else (a leaf: it imports no backend): the sampling settings,
the completion record, the `RolloutBackend` protocol, and weight transport.

Weights travel as a dict of numpy arrays (Hugging Face parameter names, LoRA already merged): one object put in
Ray's object store reaches every worker without a copy, and vLLM's worker receives the same dict.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are drawn: K per prompt, at most `max_new_tokens` each (temperature 0: greedy)."""
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


class RolloutBackend(Protocol):
    """What the trainer and the weight-sync tests need of a backend (hf, torch, vllm)."""

    tokenizer: object

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[Completion]:
        """K = sampling.num_generations completions per prompt, prompt by prompt in order."""

    def load_weights(self, packed: dict) -> None:
        """Replaces the policy weights in place with `pack_weights` output."""

    def score(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        """The log-prob of each completion token given the prompt, under the current weights."""


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


def packed_bytes(packed: dict[str, tuple[str, np.ndarray]]) -> int:
    """Bytes of the arrays in a packed weight dict (what one weight sync moves)."""
    return sum(array.nbytes for _, array in packed.values())
