"""A tiny bidirectional masked diffusion language model (MDLM) and its save/load format. Pure torch.

    model = TinyMDLM(TinyMDLMConfig(vocab_size=13, mask_token_id=12, max_length=40))
    logits = model(input_ids)                        # full (bidirectional) attention
    logits = model(input_ids, attention_mask)        # bool (N, T, T), True where a query may attend a key
    model.save(path); model = TinyMDLM.load(path)    # config.json + model.safetensors

A pre-norm transformer encoder with learned positions and no time conditioning (as in MDLM, the masked tokens tell
the model how noisy its input is). It follows the decoding model contract of `raylab.diffusion.decoding`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from raylab.diffusion.cache import shared_prefix_attention


@dataclass
class TinyMDLMConfig:
    vocab_size: int
    mask_token_id: int
    max_length: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4

    def __post_init__(self):
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id: {self.mask_token_id} is outside the vocabulary (size "
                             f"{self.vocab_size})")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: {self.d_model} is not a multiple of n_heads {self.n_heads}")


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor | None, past: tuple | None = None,
                owner: torch.Tensor | None = None):
        """-> (h, (k, v) of these tokens); `past` (k, v) of earlier tokens are attended to before them (one per
        row, or with `owner` one per sequence, shared by its rows: `raylab.diffusion.cache`)."""
        N, T, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(N, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        new = (k, v)
        if past is not None and owner is not None:
            a = shared_prefix_attention(q, k, v, attention_mask, past[0], past[1], owner)
        else:
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            mask = None if attention_mask is None else attention_mask[:, None]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.out(a.transpose(1, 2).reshape(N, T, d))
        return h + self.mlp(self.norm2(h)), new


class TinyMDLM(nn.Module):
    def __init__(self, config: TinyMDLMConfig):
        super().__init__()
        self.config = config
        self.mask_token_id, self.vocab_size, self.max_length = (config.mask_token_id, config.vocab_size,
                                                                config.max_length)
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_length, config.d_model)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_heads) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.max_length:
            raise ValueError(f"input_ids: length {T} exceeds the model's context of {self.max_length} tokens")
        if positions is None:
            positions = torch.arange(T, device=input_ids.device)
        logits, _ = self.forward_cached(input_ids, positions, attention_mask)
        return logits

    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, past: list | None = None,
                       owner: torch.Tensor | None = None):
        """The prefix-cache protocol of `raylab.diffusion.cache`: tokens at `positions` (N, S) attend to the
        cached keys/values `past` (per layer (k, v), each (N, heads, C, head_dim)) and to themselves, as the
        bool mask (N, S, C + S) allows. Returns (logits (N, S, V), per layer (k, v) of the S tokens)."""
        h = self.tok(input_ids) + self.pos(positions)
        kv = []
        for i, block in enumerate(self.blocks):
            h, new = block(h, attention_mask, None if past is None else past[i], owner)
            kv.append(new)
        return self.head(self.norm(h)), kv

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({k: v.detach().float().contiguous() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"))
        return path

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "TinyMDLM":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: not a TinyMDLM checkpoint (needs config.json and model.safetensors)")
        model = cls(TinyMDLMConfig(**json.loads((path / "config.json").read_text())))
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.to(dtype).eval()
