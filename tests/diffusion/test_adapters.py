"""load_diffusion_lm on tiny random native checkpoints of each architecture: decoding through the loaded model."""
import pytest
import torch
from dllm_models import TINY_MASK, tiny_checkpoint

from raylab.diffusion import generate, load_diffusion_lm
from raylab.diffusion.decoding import block_causal_mask


def load(tmp_path, kind):
    return load_diffusion_lm(kind, tiny_checkpoint(tmp_path, "sdar" if kind == "trado" else kind, scale=4.0),
                             dtype=torch.float64, device="cpu")


def prompts():
    return torch.randint(2, TINY_MASK, (3, 5), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["llada", "dream", "trado"])
def test_freedave_equals_static_through_the_loaded_model(tmp_path, kind):
    dllm = load(tmp_path, kind)
    kw = dict(gen_length=8, block_length=4)
    static = dllm.generate(prompts(), method="static", **kw)
    fd = dllm.generate(prompts(), method="freedave", draft_steps=4, **kw)
    assert torch.equal(fd.sequences, static.sequences) and (fd.nfe <= static.nfe).all()
    assert (fd.nfe < static.nfe).any()  # sharpened logits: some drafts verify


def test_defaults_come_from_the_checkpoint(tmp_path):
    kinds = {k: load(tmp_path, k) for k in ("llada", "dream", "trado")}
    assert {k: (d.mask_token_id, d.shifted_logits, d.attention) for k, d in kinds.items()} == {
        "llada": (TINY_MASK, False, "full"), "dream": (TINY_MASK, True, "full"),
        "trado": (TINY_MASK, False, "block_causal")}


def test_dream_logits_are_read_shifted(tmp_path):
    dllm = load(tmp_path, "dream")

    def aligned(ids):  # the same network read without the shift: logits for token i come from position i - 1
        logits = dllm(ids)
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

    got = dllm.generate(prompts(), method="static", gen_length=6)
    want = generate(aligned, prompts(), method="static", gen_length=6, mask_token_id=TINY_MASK)
    assert torch.equal(got.sequences, want.sequences)


def test_block_causal_mask_reaches_the_model(tmp_path):
    dllm = load(tmp_path, "trado")
    mask = block_causal_mask(prompt_len=4, gen_length=8, block_length=4)[None]
    ids = torch.randint(2, TINY_MASK, (1, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 8:] = TINY_MASK  # the last block: invisible to everything before it
    a, b = dllm(ids, mask), dllm(changed, mask)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.equal(a[:, 8:], b[:, 8:])
    inside = ids.clone()  # and bidirectional inside a block: a later token of the block changes an earlier one
    inside[0, 7] = (ids[0, 7] + 1) % TINY_MASK
    assert not torch.equal(dllm(inside, mask)[:, 4], a[:, 4])
