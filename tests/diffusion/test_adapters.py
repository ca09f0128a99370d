"""The LLaDA / Dream / TraDo adapters on tiny transformers models of the same shape, built from a config."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from raylab.diffusion import generate
from raylab.diffusion.adapters import KINDS, load_diffusion_lm

VOCAB = 32
MASK = VOCAB - 1
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def save(tmp_path, model_class, config_class, name):
    torch.manual_seed(0)
    path = tmp_path / name
    model_class(config_class(**SMALL)).save_pretrained(path)
    return path


def load(kind, path):
    return load_diffusion_lm(kind, path, dtype=torch.float64, device="cpu", mask_token_id=MASK,
                             full_attention_mask=KINDS[kind].attention == "full")


def prompts():
    return torch.randint(0, MASK, (3, 5), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["llada", "dream", "trado"])
def test_freedave_equals_static_through_the_adapter(tmp_path, kind):
    model_class, config_class = (LlamaForCausalLM, LlamaConfig) if kind == "llada" else (Qwen2ForCausalLM,
                                                                                           Qwen2Config)
    dllm = load(kind, save(tmp_path, model_class, config_class, kind))
    kw = dict(gen_length=8, block_length=4)
    static = dllm.generate(prompts(), method="static", **kw)
    fd = dllm.generate(prompts(), method="freedave", draft_steps=4, **kw)
    assert torch.equal(fd.sequences, static.sequences) and (fd.nfe <= static.nfe).all()


def test_dream_adapter_shifts_logits(tmp_path):
    dllm = load("dream", save(tmp_path, Qwen2ForCausalLM, Qwen2Config, "dream"))

    def aligned(ids):  # the same network read without the shift: logits for token i come from position i - 1
        logits = dllm(ids)
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

    got = dllm.generate(prompts(), method="static", gen_length=6)
    want = generate(aligned, prompts(), method="static", gen_length=6, mask_token_id=MASK)
    assert torch.equal(got.sequences, want.sequences)


def test_block_causal_mask_reaches_the_transformers_model(tmp_path):
    dllm = load("trado", save(tmp_path, Qwen2ForCausalLM, Qwen2Config, "trado"))
    from raylab.diffusion.decoding import block_causal_mask

    mask = block_causal_mask(prompt_len=4, gen_length=8, block_length=4)[None]
    ids = torch.randint(0, MASK, (1, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 8:] = MASK  # the last block: invisible to everything before it
    a, b = dllm(ids, mask), dllm(changed, mask)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.equal(a[:, 8:], b[:, 8:])
    # and the model is bidirectional inside a block: a later token of the block changes an earlier one
    inside = ids.clone()
    inside[0, 7] = (ids[0, 7] + 1) % MASK
    assert not torch.equal(dllm(inside, mask)[:, 4], a[:, 4])


def test_real_mask_ids_and_one_line_errors(tmp_path):
    assert (KINDS["llada"].mask_token_id, KINDS["dream"].mask_token_id, KINDS["trado"].mask_token_id) == (
        126336, 151666, 151669)
    assert KINDS["dream"].shifted_logits and KINDS["trado"].attention == "block_causal"
    with pytest.raises(FileNotFoundError, match="no model there"):
        load_diffusion_lm("llada", tmp_path / "missing")
    with pytest.raises(ValueError, match="kind: 'gpt' is not one of"):
        load_diffusion_lm("gpt", tmp_path)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}))
    with pytest.raises(ValueError, match="pass trust_remote_code=True"):
        load_diffusion_lm("llada", remote)
    # the real LLaDA mask id is outside a tiny vocabulary: caught before any forward
    path = save(tmp_path, LlamaForCausalLM, LlamaConfig, "llada")
    dllm = load_diffusion_lm("llada", path, dtype=torch.float64, device="cpu")
    with pytest.raises(ValueError, match="mask_token_id: 126336 is outside the vocabulary \\(size 32\\)"):
        dllm.generate(prompts(), gen_length=4)
