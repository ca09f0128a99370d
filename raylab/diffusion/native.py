"""Native (pure torch) LLaDA, Dream and SDAR/TraDo models that load the published checkpoints without remote code.

    cfg = ArchConfig.from_hf(json.load(open(path / "config.json")))      # or build_model / load_native below
    model = load_native("sdar", "/models/TraDo-4B-Instruct", dtype=torch.bfloat16, device="cuda")
    logits = model(input_ids)                                   # full attention
    logits = model(input_ids, attention_mask)                   # bool (N, T, T): True where a query may see a key
    logits, kv = model.forward_cached(ids, positions, mask, past)   # the prefix-cache protocol (diffusion.cache)

The three architectures are one pre-norm transformer (RMSNorm, rotary positions, grouped-query attention, SwiGLU
MLP) that differ in a few switches, each read from the checkpoint's own `config.json`:

| arch  | config `model_type` | q/k/v bias                        | q/k RMSNorm per head | logits    | attention    |
|-------|---------------------|-----------------------------------|----------------------|-----------|--------------|
| llada | `llada`             | `include_bias`/`include_qkv_bias` | no                   | aligned   | full         |
| dream | `Dream`             | yes (o_proj: no)                  | no                   | shifted   | full         |
| sdar  | `sdar`              | `attention_bias`                  | yes                  | aligned   | block-causal |

Weights keep their official names (`official_names`): the state dict of a `DiffusionTransformer` is renamed to
and from the checkpoint's names on load, and a checkpoint whose names differ from what its config implies is
refused with one line naming the first missing or unexpected weight. Attention masks are boolean, True where a
query may attend a key, in every architecture (SDAR's own code reads a float mask as "> 0 is visible"; raylab
never sends it an additive one). Fidelity to the official code: tests/diffusion/test_native_parity.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from raylab.diffusion.cache import shared_prefix_attention

ARCHS = ("llada", "dream", "sdar")
MODEL_TYPES = {"llada": "llada", "dream": "dream", "sdar": "sdar"}  # config model_type (lower case) -> arch


@dataclass(frozen=True)
class ArchConfig:
    """The architecture switches and sizes of one checkpoint, in raylab's names."""
    arch: str
    vocab_size: int             # rows of the embedding and of the logits
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_length: int
    qkv_bias: bool
    out_bias: bool
    qk_norm: bool
    tie_embeddings: bool
    mask_token_id: int
    block_size: int | None = None      # SDAR's training block size (its decoding default)
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch: {self.arch!r} is not one of {list(ARCHS)}")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id: {self.mask_token_id} is outside the vocabulary (size "
                             f"{self.vocab_size})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_key_value_heads: {self.num_kv_heads} does not divide the {self.num_heads} "
                             "attention heads")

    @property
    def shifted_logits(self) -> bool:
        return self.arch == "dream"

    @property
    def attention(self) -> str:
        return "block_causal" if self.arch == "sdar" else "full"

    @classmethod
    def from_hf(cls, config: dict, where: str = "config.json") -> "ArchConfig":
        """Reads a checkpoint's config.json (as a dict); one-line errors for unknown or unsupported settings."""
        model_type = str(config.get("model_type", "")).lower()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"{where}: model_type {config.get('model_type')!r} is not a known diffusion LM "
                             f"architecture ({', '.join(ARCHS)})")
        arch = MODEL_TYPES[model_type]
        return (_llada if arch == "llada" else _qwen_style)(arch, config, where)


def _require(config: dict, where: str, key: str, allowed) -> None:
    if config.get(key, allowed[0]) not in allowed:
        raise ValueError(f"{where}: {key}={config.get(key)!r} is not supported by the native model "
                         f"(supported: {allowed})")


def _llada(arch: str, c: dict, where: str) -> ArchConfig:
    for key, allowed in [("block_type", ["llama"]), ("layer_norm_type", ["rms"]), ("activation_type", ["silu"]),
                         ("rope", [True]), ("alibi", [False]), ("input_emb_norm", [False]),
                         ("scale_logits", [False]), ("attention_layer_norm", [False]), ("multi_query_attention",
                                                                                          [None, False])]:
        _require(c, where, key, allowed)
    heads = c["n_heads"]
    return ArchConfig(
        arch, vocab_size=c.get("embedding_size") or c["vocab_size"], hidden_size=c["d_model"],
        intermediate_size=c.get("mlp_hidden_size") or c.get("mlp_ratio", 4) * c["d_model"],
        num_layers=c["n_layers"], num_heads=heads, num_kv_heads=c.get("n_kv_heads") or heads,
        head_dim=c["d_model"] // heads, rope_theta=float(c.get("rope_theta", 10000.0)),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-5)), max_length=c.get("max_sequence_length", 1024),
        qkv_bias=bool(c.get("include_bias", False) or c.get("include_qkv_bias", False)),
        out_bias=bool(c.get("include_bias", False)), qk_norm=False, tie_embeddings=bool(c.get("weight_tying", False)),
        mask_token_id=c.get("mask_token_id", 126336), eos_token_id=c.get("eos_token_id"),
        pad_token_id=c.get("pad_token_id"))


def _qwen_style(arch: str, c: dict, where: str) -> ArchConfig:
    _require(c, where, "hidden_act", ["silu"])
    _require(c, where, "rope_scaling", [None])
    if c.get("use_sliding_window"):
        raise ValueError(f"{where}: use_sliding_window=true is not supported by the native model")
    heads = c["num_attention_heads"]
    eos = c.get("eos_token_id")
    return ArchConfig(
        arch, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_layers=c["num_hidden_layers"], num_heads=heads, num_kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or c["hidden_size"] // heads, rope_theta=float(c.get("rope_theta", 10000.0)),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)), max_length=c.get("max_position_embeddings", 32768),
        qkv_bias=True if arch == "dream" else bool(c.get("attention_bias", False)),
        out_bias=False if arch == "dream" else bool(c.get("attention_bias", False)), qk_norm=arch == "sdar",
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        mask_token_id=c.get("mask_token_id", 151666 if arch == "dream" else 151669),
        block_size=c.get("block_size") if arch == "sdar" else None,
        eos_token_id=eos[0] if isinstance(eos, list) else eos, pad_token_id=c.get("pad_token_id"))


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(size)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (N, heads, S, D) with cos/sin (N, 1, S, D) (the rotate-half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class Layer(nn.Module):
    def __init__(self, c: ArchConfig):
        super().__init__()
        self.c = c
        self.attn_norm, self.mlp_norm = RMSNorm(c.hidden_size, c.rms_norm_eps), RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.q = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.out_bias)
        if c.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps), RMSNorm(c.head_dim, c.rms_norm_eps)
        self.gate = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, h, cos, sin, mask, past, owner=None):
        N, S, _ = h.shape
        c = self.c
        x = self.attn_norm(h)
        q = self.q(x).view(N, S, c.num_heads, c.head_dim)
        k = self.k(x).view(N, S, c.num_kv_heads, c.head_dim)
        v = self.v(x).view(N, S, c.num_kv_heads, c.head_dim).transpose(1, 2)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q.transpose(1, 2), cos, sin), rotate(k.transpose(1, 2), cos, sin)
        new = (k, v)
        if past is not None and owner is not None:  # drafts share their sequence's prefix (diffusion.cache)
            a = shared_prefix_attention(q, k, v, mask, past[0], past[1], owner)
        else:
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            groups = c.num_heads // c.num_kv_heads
            if groups > 1:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None])
        h = h + self.o(a.transpose(1, 2).reshape(N, S, -1))
        x = self.mlp_norm(h)
        return h + self.down(F.silu(self.gate(x)) * self.up(x)), new


class DiffusionTransformer(nn.Module):
    """The shared architecture; follows the decoding contract of `raylab.diffusion.decoding` and the prefix-cache
    protocol of `raylab.diffusion.cache`."""

    def __init__(self, config: ArchConfig):
        super().__init__()
        self.config = c = config
        self.vocab_size, self.max_length, self.mask_token_id = c.vocab_size, c.max_length, c.mask_token_id
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.head = None if c.tie_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self._inv_freq: torch.Tensor | None = None  # float32 whatever the weights' dtype (not a buffer)

    def inv_freq(self, device) -> torch.Tensor:
        if self._inv_freq is None or self._inv_freq.device != device:
            c = self.config
            exponent = torch.arange(0, c.head_dim, 2, dtype=torch.float32, device=device) / c.head_dim
            self._inv_freq = 1.0 / (c.rope_theta ** exponent)
        return self._inv_freq

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, T, V). `attention_mask`: None (full) or bool (N, T, T); `positions`: (N, T), default 0..T-1."""
        T = input_ids.shape[1]
        if T > self.max_length:
            raise ValueError(f"input_ids: length {T} exceeds the model's context of {self.max_length} tokens")
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(input_ids.shape[0], -1)
        return self.forward_cached(input_ids, positions, attention_mask, None)[0]

    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, past: list | None = None,
                       owner: torch.Tensor | None = None):
        """Tokens at `positions` (N, S) attend to the cached keys/values `past` (per layer (k, v), each
        (N, kv_heads, C, head_dim), rotary already applied; with `owner` (N,) one per sequence, (B, ...), shared
        by the rows it owns) and to themselves, as the bool mask (N, S, C + S) allows. Returns (logits
        (N, S, V), per layer (k, v) of the S tokens)."""
        h = self.embed(input_ids)
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq(input_ids.device)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
        kv = []
        for i, layer in enumerate(self.layers):
            h, new = layer(h, cos, sin, attention_mask, None if past is None else past[i], owner)
            kv.append(new)
        h = self.norm(h)
        return (F.linear(h, self.embed.weight) if self.head is None else self.head(h)), kv


_LAYER_NAMES = {  # native name inside layer i -> official name (format with i)
    "llada": {"attn_norm": "model.transformer.blocks.{i}.attn_norm", "mlp_norm": "model.transformer.blocks.{i}.ff_norm",
              "q": "model.transformer.blocks.{i}.q_proj", "k": "model.transformer.blocks.{i}.k_proj",
              "v": "model.transformer.blocks.{i}.v_proj", "o": "model.transformer.blocks.{i}.attn_out",
              "gate": "model.transformer.blocks.{i}.ff_proj", "up": "model.transformer.blocks.{i}.up_proj",
              "down": "model.transformer.blocks.{i}.ff_out"},
    "qwen": {"attn_norm": "model.layers.{i}.input_layernorm", "mlp_norm": "model.layers.{i}.post_attention_layernorm",
             "q": "model.layers.{i}.self_attn.q_proj", "k": "model.layers.{i}.self_attn.k_proj",
             "v": "model.layers.{i}.self_attn.v_proj", "o": "model.layers.{i}.self_attn.o_proj",
             "q_norm": "model.layers.{i}.self_attn.q_norm", "k_norm": "model.layers.{i}.self_attn.k_norm",
             "gate": "model.layers.{i}.mlp.gate_proj", "up": "model.layers.{i}.mlp.up_proj",
             "down": "model.layers.{i}.mlp.down_proj"},
}
_TOP_NAMES = {
    "llada": {"embed": "model.transformer.wte", "norm": "model.transformer.ln_f", "head": "model.transformer.ff_out"},
    "qwen": {"embed": "model.embed_tokens", "norm": "model.norm", "head": "lm_head"},
}


def official_names(model: DiffusionTransformer) -> dict[str, str]:
    """Native state-dict key -> the checkpoint's key, for every weight of `model`."""
    family = "llada" if model.config.arch == "llada" else "qwen"
    names = {}
    for key in model.state_dict():
        module, leaf = key.rsplit(".", 1)
        if module.startswith("layers."):
            _, i, part = module.split(".", 2)
            names[key] = f"{_LAYER_NAMES[family][part].format(i=i)}.{leaf}"
        else:
            names[key] = f"{_TOP_NAMES[family][module]}.{leaf}"
    return names


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory: model.safetensors or the shards named by its index."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    weights = {}
    for shard in shards:
        if not (path / shard).is_file():
            raise FileNotFoundError(f"{path}: shard {shard} named by the weight index is missing")
        weights.update(load_file(str(path / shard)))
    return weights


def check_names(expected: set[str], found: set[str], where: str) -> None:
    """One line naming the first missing, then the first unexpected, weight."""
    if missing := sorted(expected - found):
        raise ValueError(f"{where}: weight {missing[0]!r} is missing ({len(missing)} missing in all)")
    if unexpected := sorted(found - expected):
        raise ValueError(f"{where}: unexpected weight {unexpected[0]!r} ({len(unexpected)} unexpected in all)")


def load_native(path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: str = "cpu",
                arch: str | None = None) -> DiffusionTransformer:
    """Builds the native model from `path`/config.json and loads its safetensors by their official names. With
    `arch`, a config of another architecture is refused."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no model there (no config.json)")
    cfg = ArchConfig.from_hf(json.loads((path / "config.json").read_text()), where=str(path / "config.json"))
    if arch is not None and cfg.arch != arch:
        raise ValueError(f"{path}: config.json describes a {cfg.arch} model, not {arch}")
    with torch.device("meta"):
        model = DiffusionTransformer(cfg)
    names = official_names(model)
    index = path / "model.safetensors.index.json"
    if index.is_file():  # checked from the index before reading gigabytes of shards
        check_names(set(names.values()), set(json.loads(index.read_text())["weight_map"]), str(index))
    weights = read_weights(path)
    check_names(set(names.values()), set(weights), str(path))
    state = {}
    for native, official in names.items():
        tensor, want = weights[official], model.state_dict()[native].shape
        if tensor.shape != want:
            raise ValueError(f"{path}: weight {official!r} has shape {tuple(tensor.shape)}, the config implies "
                             f"{tuple(want)}")
        state[native] = tensor.to(dtype)
    model = model.to_empty(device=device)
    model.load_state_dict(state)
    return model.to(dtype=dtype).eval()


def save_native(model: DiffusionTransformer, path: str | Path, hf_config: dict) -> Path:
    """Writes `hf_config` as config.json and the weights under their official names (model.safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    state = model.state_dict()
    save_file({official: state[native].contiguous() for native, official in official_names(model).items()},
              str(path / "model.safetensors"))
    return path


def tiny_config(arch: str, vocab_size: int = 64, mask_token_id: int = 60, eos_token_id: int = 1) -> dict:
    """config.json of a tiny random checkpoint of `arch` (hidden 32, 2 layers, GQA 4:2), in the checkpoints' own
    keys: for tests and for the benchmark's random models."""
    if arch == "llada":
        return dict(model_type="llada", d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48,
                    vocab_size=vocab_size, embedding_size=vocab_size, mask_token_id=mask_token_id,
                    rope_theta=10000.0, rms_norm_eps=1e-5, max_sequence_length=256, block_type="llama",
                    layer_norm_type="rms", activation_type="silu", include_bias=False, weight_tying=False,
                    eos_token_id=eos_token_id)
    common = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab_size, mask_token_id=mask_token_id,
                  max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6, eos_token_id=eos_token_id)
    if arch == "dream":
        return dict(model_type="Dream", pad_token_id=0, **common)
    if arch == "sdar":
        return dict(model_type="sdar", head_dim=16, block_size=4, attention_bias=False, tie_word_embeddings=False,
                    **common)
    raise ValueError(f"arch: {arch!r} is not one of {list(ARCHS)}")


def random_model(arch: str, seed: int = 0, scale: float = 1.0, **config) -> DiffusionTransformer:
    """A tiny random native model (`tiny_config`); `scale` multiplies the weight matrices (sharper logits, so
    more drafts verify) and norm weights are drawn around 1."""
    generator = torch.Generator().manual_seed(seed)
    model = DiffusionTransformer(ArchConfig.from_hf(tiny_config(arch, **config)))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02 * scale, generator=generator)
            else:
                p.normal_(1.0, 0.1, generator=generator)
    return model.eval()

