"""Loading LLaDA, Dream and SDAR/TraDo checkpoints for decoding: native models, no remote code. Pure torch.

    from raylab.diffusion import load_diffusion_lm
    dllm = load_diffusion_lm("sdar", "/models/TraDo-4B-Instruct", dtype=torch.bfloat16, device="cuda")
    out = dllm.generate(prompt_ids, method="freedave", gen_length=256, block_length=4, draft_steps=8)

| kind          | checkpoints                                      | mask id | logits                   | attention    |
|---------------|--------------------------------------------------|---------|--------------------------|--------------|
| llada         | GSAI-ML/LLaDA-8B-Instruct                        | 126336  | aligned (i predicts i)   | full         |
| dream         | Dream-org/Dream-v0-Instruct-7B                   | 151666  | shifted (i predicts i+1) | full         |
| sdar (trado)  | JetLM/SDAR-4B/8B-Chat, Gen-Verse/TraDo-4B/8B-Instruct | 151669 | aligned              | block-causal |

Decoding defaults (`DiffusionLM.generate`; each can be overridden per call): the checkpoint's mask and EOS ids;
for SDAR/TraDo the absolute block layout (blocks at multiples of the block size from position 0, the answer
padded to fill the last block) and the config's `block_size` (4 for SDAR-4B and TraDo); `stop_on_eos_block`
False, `eager_drafts` False (the official TraDo FreeDave setting is block 4 with k = 8 and eager drafts:
`eager_drafts=True, draft_steps=8`), `use_cache` False (True gives the exact prefix cache of
`raylab.diffusion.cache` for block-causal models).

A known architecture always loads natively (`raylab.diffusion.native`), also when its config.json still carries
`auto_map` (the checkpoint's own code is never run). The mask id, EOS id, logit alignment and attention come
from the checkpoint's config. Only `kind="remote"` with `trust_remote_code=True` runs a checkpoint's own code
through transformers, for an architecture raylab does not know (it is not checked against anything).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from raylab.diffusion.decoding import generate
from raylab.diffusion.native import ArchConfig, load_native

KINDS = {"llada": "llada", "dream": "dream", "sdar": "sdar", "trado": "sdar"}


class DiffusionLM:
    """A model plus its decoding defaults (mask id, logit alignment, attention)."""

    def __init__(self, model, *, mask_token_id: int, shifted_logits: bool, attention: str,
                 eos_token_id: int | None = None, block_size: int | None = None):
        self.model, self.mask_token_id, self.shifted_logits = model, mask_token_id, shifted_logits
        self.attention, self.eos_token_id, self.block_size = attention, eos_token_id, block_size
        self.vocab_size = getattr(model, "vocab_size", None) or getattr(getattr(model, "config", None),
                                                                      "vocab_size", None)
        self.max_length = getattr(model, "max_length", None) or getattr(getattr(model, "config", None),
                                                                      "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids) if attention_mask is None else self.model(input_ids, attention_mask)
        return out.logits if hasattr(out, "logits") else out

    def generate(self, prompt_ids: torch.Tensor, **kwargs):
        """`raylab.diffusion.generate` with this model's defaults: its mask id, EOS id, logit alignment and
        attention; block-causal models also get the absolute block layout and their training block size, Dream
        (shifted logits) `fill_block_start=True`."""
        defaults = {"mask_token_id": self.mask_token_id, "shifted_logits": self.shifted_logits,
                    "attention": self.attention, "eos_token_id": self.eos_token_id}
        if self.attention == "block_causal":
            defaults.update(block_layout="absolute", block_length=self.block_size)
        if self.shifted_logits:  # Dream: a block's first token is filled first, as its block decoding does
            defaults.update(fill_block_start=True)
        kwargs = {**defaults, **kwargs}
        return generate(self.model, prompt_ids.to(self.device), **kwargs)


def load_diffusion_lm(kind: str, path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: str = "cuda",
                      trust_remote_code: bool = False) -> DiffusionLM:
    """Loads a local checkpoint (config.json + safetensors). `kind` is llada, dream, sdar (alias trado) or remote;
    one-line errors for an unknown kind, a missing path, a config of another architecture, and weights whose
    names or shapes do not match the config."""
    if kind not in (*KINDS, "remote"):
        raise ValueError(f"kind: {kind!r} is not one of {sorted([*KINDS, 'remote'])}")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no model there (no config.json); download the weights to a local "
                                "directory first")
    if kind == "remote":
        return _load_remote(path, dtype, device, trust_remote_code)
    model = load_native(path, dtype=dtype, device=device, arch=KINDS[kind])
    cfg: ArchConfig = model.config
    return DiffusionLM(model, mask_token_id=cfg.mask_token_id, shifted_logits=cfg.shifted_logits,
                       attention=cfg.attention, eos_token_id=cfg.eos_token_id, block_size=cfg.block_size)


def _load_remote(path: Path, dtype: torch.dtype, device: str, trust_remote_code: bool) -> DiffusionLM:
    config = json.loads((path / "config.json").read_text())
    if not trust_remote_code:
        raise ValueError(f"{path}: kind='remote' runs the checkpoint's own code; pass trust_remote_code=True")
    if "mask_token_id" not in config:
        raise ValueError(f"{path}: config.json has no mask_token_id (needed to decode)")
    import transformers

    model = transformers.AutoModel.from_pretrained(str(path), trust_remote_code=True, dtype=dtype).to(device).eval()
    return DiffusionLM(model, mask_token_id=config["mask_token_id"], shifted_logits=False, attention="full",
                       eos_token_id=config.get("eos_token_id"))
