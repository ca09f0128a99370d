"""Runs the official LLaDA, Dream and SDAR model code on tiny random configs and writes what raylab must reproduce.

    .venv-ref/bin/python tests/diffusion/reference_run.py REFERENCE_MODELS_DIR OUT_DIR

Runs in the reference environment (`make ref-env`: torch 2.13 and the transformers 4.52.4 that SDAR's config.json
names), never in raylab's. For each architecture it writes OUT_DIR/<arch>/ with config.json and model.safetensors
(the reference model's own state dict, so the official weight names) and cases.safetensors: input ids and the
reference logits for full attention, block-causal attention (blocks at absolute multiples of the block size), and
a prefix KV cache (prefix stored, then the rest fed against it). tests/diffusion/test_native_parity.py compares.

SDAR's code imports two CUDA-only packages; this script provides plain-torch stand-ins for exactly the functions
it calls: `flash_attn.ops.triton.layer_norm.rms_norm_fn` (the RMSNorm that modeling_sdar.py keeps in a comment),
`flash_attn.flash_attn_func` (unmasked softmax attention, layout (batch, length, heads, dim)) and an empty
training-loss module (`fused_linear_diffusion_cross_entropy` imports triton).
"""
import json
import sys
import types
from pathlib import Path

import torch
from torch.nn import functional as F

VOCAB, MASK, P, G, L = 256, 250, 5, 11, 4  # prompt 5 + answer 11 = 16 tokens: 4 absolute blocks of 4
T = P + G


def rms_norm_fn(x, weight, bias=None, eps=1e-6, **_):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def flash_attn_func(q, k, v, causal=False, softmax_scale=None, **_):
    assert not causal
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, scale=softmax_scale).transpose(1, 2)


def install_stand_ins() -> None:
    import transformers.modeling_utils  # noqa: F401  (it probes for flash_attn: before the stand-in exists)

    flash = types.ModuleType("flash_attn")
    flash.flash_attn_func = flash_attn_func
    flash.flash_attn_varlen_func = None
    for name in ("flash_attn.ops", "flash_attn.ops.triton", "flash_attn.ops.triton.layer_norm",
                 "flash_attn.bert_padding"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["flash_attn.ops.triton.layer_norm"].rms_norm_fn = rms_norm_fn
    bp = sys.modules["flash_attn.bert_padding"]
    bp.index_first_axis = bp.pad_input = bp.unpad_input = None
    sys.modules["flash_attn"] = flash
    loss = types.ModuleType("sdar.fused_linear_diffusion_cross_entropy")
    loss.FusedLinearDiffusionCrossEntropyLoss = None
    sys.modules["sdar.fused_linear_diffusion_cross_entropy"] = loss


def block_mask() -> torch.Tensor:
    blk = torch.arange(T) // L
    return blk[None, :] <= blk[:, None]  # (T, T) True where query i may see key j


def build(arch: str):
    torch.manual_seed({"llada": 0, "dream": 1, "sdar": 2}[arch])
    if arch == "llada":
        from llada.configuration_llada import LLaDAConfig
        from llada.modeling_llada import LLaDAModelLM

        cfg = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=VOCAB,
                          embedding_size=VOCAB, mask_token_id=MASK, rope=True, rope_theta=500000.0,
                          block_type="llama", activation_type="silu", layer_norm_type="rms", rms_norm_eps=1e-5,
                          include_bias=False, weight_tying=False, flash_attention=False, init_device="cpu",
                          max_sequence_length=64)
        model = LLaDAModelLM(cfg, init_params=True)
    elif arch == "dream":
        from dream.configuration_dream import DreamConfig
        from dream.modeling_dream import DreamModel

        cfg = DreamConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=VOCAB, mask_token_id=MASK, pad_token_id=0,
                          max_position_embeddings=64)
        cfg._attn_implementation = "sdpa"
        model = DreamModel(cfg)
    else:
        install_stand_ins()  # after llada and dream: their imports probe for a real flash_attn
        from sdar.configuration_sdar import SDARConfig
        from sdar.modeling_sdar import SDARForCausalLM

        real = json.loads((REF / "sdar" / "config.json").read_text())
        small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, vocab_size=VOCAB, mask_token_id=MASK, bos_token_id=0,
                     eos_token_id=1, max_position_embeddings=64, max_window_layers=2)
        fields = {k: v for k, v in real.items() if k not in ("auto_map", "architectures", "model_type",
                                                              "transformers_version", "torch_dtype")}
        cfg = SDARConfig(**{**fields, **small})
        cfg._attn_implementation = "sdpa"
        model = SDARForCausalLM(cfg)
    for p in model.parameters():  # non-trivial norms and biases, so that a swapped weight cannot pass
        if p.ndim == 1:
            p.data.normal_(1.0 if p.shape[0] in (32, 64) else 0.0, 0.2)
    return cfg, model.float().eval()


def logits_of(out):
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def run_cases(arch: str, model) -> dict:
    from transformers.cache_utils import DynamicCache

    g = torch.Generator().manual_seed(7)
    ids = torch.randint(2, MASK, (2, T), generator=g)
    ids[:, P + 3:] = MASK  # a partly decoded answer
    mask = block_mask()
    out = {"input_ids": ids}
    with torch.no_grad():
        if arch == "sdar":
            out["full"] = logits_of(model(input_ids=ids, attention_mask=torch.ones(1, 1, T, T, dtype=torch.bool)))
            out["block_causal"] = logits_of(model(input_ids=ids, attention_mask=mask[None, None]))
            C = 2 * L  # two finished blocks (the prompt spans blocks 0-1): stored once, then the rest fed after them
            cache = DynamicCache()
            model(input_ids=ids[:, :C], attention_mask=mask[None, None, :C, :C], past_key_values=cache,
                  use_cache=True, store_kv=True)
            rest = torch.ones(1, 1, T - C, T, dtype=torch.bool) & mask[None, None, C:, :]
            out["cached"] = logits_of(model(input_ids=ids[:, C:], attention_mask=rest, past_key_values=cache,
                                            use_cache=True, store_kv=False))
        else:
            out["full"] = logits_of(model(input_ids=ids))
            bias = torch.where(mask, 0.0, torch.finfo(torch.float32).min)[None, None]
            # LLaDA turns a bool 4-D mask into a bias itself; Dream's SDPA call casts its mask to float, so it is
            # given the additive bias that a bool mask stands for (a bool would become +1/0, i.e. no mask)
            block_in = mask[None, None] if arch == "llada" else bias
            out["block_causal"] = logits_of(model(input_ids=ids, attention_mask=block_in))
            C = 2 * L
            cache = DynamicCache()
            model(input_ids=ids[:, :C], past_key_values=cache, use_cache=True)
            out["cached"] = logits_of(model(input_ids=ids[:, C:], past_key_values=cache, use_cache=True))
    return out


def main() -> int:
    global REF
    REF, dest = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(REF))
    from safetensors.torch import save_file

    for arch in ("llada", "dream", "sdar"):
        cfg, model = build(arch)
        d = dest / arch
        d.mkdir(parents=True, exist_ok=True)
        config = cfg.to_dict()
        config["model_type"] = {"llada": "llada", "dream": "Dream", "sdar": "sdar"}[arch]
        (d / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in run_cases(arch, model).items()}, str(d / "cases.safetensors"))
        print(arch, "ok")
    return 0


REF = Path()
if __name__ == "__main__":
    sys.exit(main())
