"""The native LLaDA / Dream / SDAR models against the official model code, and their checkpoint loading.

The official code (../shared/reference_models) needs transformers 4.x, so it runs in its own environment
(.venv-ref, `make ref-env`, built here when missing) through tests/diffusion/reference_run.py; its weights and
logits come back through files. Logits must agree to 1e-5 in float32: full attention, block-causal attention with
blocks at absolute multiples of the block size, and a prefix KV cache.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from dllm_models import TINY_MASK, tiny_checkpoint
from safetensors.torch import load_file, save_file

from raylab.diffusion import load_diffusion_lm
from raylab.diffusion.native import ArchConfig, DiffusionTransformer, load_native, official_names

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("RAYLAB_REFERENCE_MODELS", ROOT.parent / "shared" / "reference_models"))
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
T, L, C = 16, 4, 8  # as in reference_run.py: 16 tokens, blocks of 4, a cached prefix of two blocks


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not REFERENCE.is_dir():
        pytest.skip(f"no reference model code at {REFERENCE} (../shared is absent)")
    if not (ROOT / ".venv-ref" / ".installed").is_file():
        subprocess.run(["make", "-C", str(ROOT), "ref-env"], check=True)
    out = tmp_path_factory.mktemp("reference")
    subprocess.run([str(REF_PYTHON), str(ROOT / "tests/diffusion/reference_run.py"), str(REFERENCE), str(out)],
                   check=True, capture_output=True, text=True)
    return out


@pytest.mark.parametrize("arch", ["llada", "dream", "sdar"])
def test_logits_equal_the_official_code(reference, arch):
    model = load_native(reference / arch, dtype=torch.float32, device="cpu", arch=arch)
    cases = load_file(str(reference / arch / "cases.safetensors"))
    ids = cases["input_ids"]
    N = ids.shape[0]
    blk = torch.arange(T) // L
    mask = (blk[None, :] <= blk[:, None]).expand(N, -1, -1)
    pos = torch.arange(T).expand(N, -1)
    prefix_mask, rest_mask = (mask[:, :C, :C], mask[:, C:]) if arch == "sdar" else (None, None)
    _, kv = model.forward_cached(ids[:, :C], pos[:, :C], prefix_mask, None)
    got = {"full": model(ids), "block_causal": model(ids, mask),
           "cached": model.forward_cached(ids[:, C:], pos[:, C:], rest_mask, kv)[0]}
    for name, logits in got.items():
        torch.testing.assert_close(logits, cases[name], rtol=0, atol=1e-5, msg=f"{arch} {name}")
    # the cases can tell the attention patterns apart (a mask ignored somewhere would not pass)
    assert (cases["full"][:, :C] - cases["block_causal"][:, :C]).abs().max() > 1e-3


def test_weight_names_are_the_sdar_checkpoints():
    sdar = REFERENCE / "sdar"
    if not sdar.is_dir():
        pytest.skip(f"no reference model code at {REFERENCE} (../shared is absent)")
    cfg = ArchConfig.from_hf(json.loads((sdar / "config.json").read_text()))
    assert (cfg.arch, cfg.mask_token_id, cfg.block_size, cfg.head_dim, cfg.attention) == (
        "sdar", 151669, 4, 128, "block_causal")
    with torch.device("meta"):
        model = DiffusionTransformer(cfg)
    index = json.loads((sdar / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(official_names(model).values()) == sorted(index)


def test_auto_map_still_loads_natively_and_decodes(tmp_path):
    path = tiny_checkpoint(tmp_path, "sdar")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"}  # no such file here
    (path / "config.json").write_text(json.dumps(config))
    dllm = load_diffusion_lm("trado", path, dtype=torch.float32, device="cpu")
    assert isinstance(dllm.model, DiffusionTransformer) and dllm.attention == "block_causal"
    out = dllm.generate(torch.tensor([[3, 4, 5]]), method="freedave", gen_length=8, block_length=4)
    assert not (out.sequences == TINY_MASK).any()


def test_mismatched_checkpoints_are_one_line_errors(tmp_path):
    path = tiny_checkpoint(tmp_path, "dream")
    with pytest.raises(ValueError, match="describes a dream model, not sdar"):
        load_diffusion_lm("sdar", path, dtype=torch.float32, device="cpu")
    weights = load_file(str(path / "model.safetensors"))
    weights["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)   # an SDAR weight in a Dream checkpoint
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected weight 'model.layers.0.self_attn.q_norm.weight'"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    del weights["model.layers.0.self_attn.q_norm.weight"], weights["lm_head.weight"]
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="weight 'lm_head.weight' is missing"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    weights["lm_head.weight"] = torch.zeros(3, 3)
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \(3, 3\), the config implies \(64, 32\)"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not a known diffusion LM architecture"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    (path / "config.json").write_text(json.dumps({**config, "mask_token_id": 64}))
    with pytest.raises(ValueError, match=r"mask_token_id: 64 is outside the vocabulary \(size 64\)"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    (path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match="hidden_act='gelu' is not supported"):
        load_diffusion_lm("dream", path, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="kind: 'gpt' is not one of"):
        load_diffusion_lm("gpt", path)
    with pytest.raises(FileNotFoundError, match="no model there"):
        load_diffusion_lm("llada", tmp_path / "missing")
    with pytest.raises(ValueError, match="pass trust_remote_code=True"):
        load_diffusion_lm("remote", path)


def test_bad_decoding_inputs_are_one_line_errors(tmp_path):
    dllm = load_diffusion_lm("llada", tiny_checkpoint(tmp_path, "llada"), dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match=r"mask_token_id: 126336 is outside the vocabulary \(size 64\)"):
        dllm.generate(torch.tensor([[1, 2]]), gen_length=4, mask_token_id=126336)
    with pytest.raises(ValueError, match="prompt length 250 \\+ gen_length 8 exceeds the model.s context of 256"):
        dllm.generate(torch.ones(1, 250, dtype=torch.long), gen_length=8)
