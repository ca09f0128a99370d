"""Adapters from Hugging Face diffusion LMs to the decoding contract: LLaDA, Dream and TraDo/SDAR. Pure torch.

    dllm = load_diffusion_lm("dream", "/models/Dream-v0-Instruct-7B", trust_remote_code=True, device="cuda")
    out = dllm.generate(prompt_ids, method="freedave", gen_length=256, block_length=32, draft_steps=8)

| kind  | model                       | mask id | logits                | attention     |
|-------|-----------------------------|---------|-----------------------|---------------|
| llada | GSAI-ML/LLaDA-8B-Instruct   | 126336  | aligned (i predicts i)| full          |
| dream | Dream-org/Dream-v0-Instruct-7B | 151666 | shifted (i predicts i+1) | full       |
| trado | Gen-Verse/TraDo-{4,8}B-Instruct, JetLM/SDAR | 151669 | aligned | block-causal |

These models ship their own modelling code, so loading them runs that code: it happens only when the caller
passes `trust_remote_code=True`. They need a GPU and their weights on local disk (this module never downloads);
neither is available where raylab's tests run, so the tests use tiny transformers models of the same shape
built from a config (`full_attention_mask=True` makes a causal stand-in bidirectional).

Block-causal attention reaches the model as an additive float mask of shape (N, 1, T, T) (0 where a query may
attend a key, the dtype's minimum elsewhere), which transformers passes through to eager and SDPA attention.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from raylab.diffusion.decoding import generate


@dataclass(frozen=True)
class ModelKind:
    mask_token_id: int
    shifted_logits: bool
    attention: str
    auto_class: str  # the transformers Auto class the model's card loads it with


KINDS = {
    "llada": ModelKind(126336, shifted_logits=False, attention="full", auto_class="AutoModel"),
    "dream": ModelKind(151666, shifted_logits=True, attention="full", auto_class="AutoModel"),
    "trado": ModelKind(151669, shifted_logits=False, attention="block_causal", auto_class="AutoModelForCausalLM"),
}
KINDS["sdar"] = KINDS["trado"]


class DiffusionLM:
    """A transformers model seen through the decoding contract: `__call__(input_ids, attention_mask)` -> logits."""

    def __init__(self, model, kind: ModelKind, full_attention_mask: bool = False):
        self.model, self.kind, self.full_attention_mask = model, kind, full_attention_mask
        cfg = getattr(model, "config", None)
        self.vocab_size = getattr(cfg, "vocab_size", None)
        self.max_length = getattr(cfg, "max_position_embeddings", None)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None and self.full_attention_mask:
            attention_mask = torch.ones(input_ids.shape[0], input_ids.shape[1], input_ids.shape[1], dtype=torch.bool,
                                        device=input_ids.device)
        if attention_mask is None:
            return self.model(input_ids=input_ids).logits
        dtype = next(self.model.parameters()).dtype
        additive = torch.zeros(attention_mask.shape, dtype=dtype, device=input_ids.device)
        additive.masked_fill_(~attention_mask.to(input_ids.device), torch.finfo(dtype).min)
        return self.model(input_ids=input_ids, attention_mask=additive[:, None]).logits

    def generate(self, prompt_ids: torch.Tensor, **kwargs):
        """`raylab.diffusion.generate` with this model's mask id, logit alignment and attention."""
        kwargs = {"mask_token_id": self.kind.mask_token_id, "shifted_logits": self.kind.shifted_logits,
                  "attention": self.kind.attention, **kwargs}
        return generate(self, prompt_ids.to(self.model.device), **kwargs)


def load_diffusion_lm(kind: str, path: str | Path, *, trust_remote_code: bool = False,
                      dtype: torch.dtype = torch.bfloat16, device: str = "cuda", mask_token_id: int | None = None,
                      full_attention_mask: bool = False) -> DiffusionLM:
    """Loads a local checkpoint with `from_pretrained(path)`; one-line errors for a wrong kind, a missing path,
    or a model that ships its own code when `trust_remote_code` was not given."""
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(KINDS)}")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no model there (no config.json); download the {kind} weights to a local "
                                "directory first")
    config = json.loads((path / "config.json").read_text())
    if "auto_map" in config and not trust_remote_code:
        raise ValueError(f"{path}: this model ships its own modelling code; pass trust_remote_code=True to run it")
    import transformers

    # the class the model card names when the checkpoint maps it to its own code; a standard architecture (a
    # stand-in built from a config) loads with its language-model head
    auto_name = KINDS[kind].auto_class if KINDS[kind].auto_class in config.get("auto_map", {}) else \
        "AutoModelForCausalLM"
    auto = getattr(transformers, auto_name)
    model = auto.from_pretrained(str(path), trust_remote_code=trust_remote_code, dtype=dtype).to(device).eval()
    spec = KINDS[kind] if mask_token_id is None else replace(KINDS[kind], mask_token_id=mask_token_id)
    return DiffusionLM(model, spec, full_attention_mask=full_attention_mask)
