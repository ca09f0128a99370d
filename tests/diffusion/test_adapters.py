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


def official_dream_block_decoding(model, prompt, gen_length, block_length, mask_id):
    """Fast-dLLM's Dream block loop (greedy, one token per forward, no cache), written from its procedure: the
    forward that enters a block fixes the block's first token from the shifted logits (the prediction made at the
    token before it); every later forward of the block fills its most confident masked token. The mask token is
    never predicted (raylab's rule, so that both sides rank the same logits)."""
    x = torch.cat([prompt, torch.full((len(prompt), gen_length), mask_id)], dim=1)
    P = prompt.shape[1]
    for b in range(gen_length // block_length):
        start, end = P + b * block_length, P + (b + 1) * block_length
        entering = True
        while (x[:, start:end] == mask_id).any():
            logits = model(x).double()
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # position i's logits predict token i
            logits[..., mask_id] = -torch.inf
            conf, token = torch.softmax(logits, dim=-1).max(dim=-1)
            for r in range(len(x)):
                if entering:
                    pos = start
                else:
                    c = torch.where(x[r, start:end] == mask_id, conf[r, start:end], -torch.inf)
                    pos = start + int(c.argmax())
                x[r, pos] = token[r, pos]
            entering = False
    return x


def test_dream_fills_a_blocks_first_token_first_as_its_official_block_decoding(tmp_path):
    dllm = load(tmp_path, "dream")
    kw = dict(gen_length=8, block_length=4)
    official = official_dream_block_decoding(dllm, prompts(), 8, 4, dllm.mask_token_id)
    static = dllm.generate(prompts(), method="static", **kw)  # the Dream default: fill_block_start=True
    assert torch.equal(static.sequences, official)
    assert (static.decode_step[:, [0, 4]] == torch.tensor([1, 5])).all()  # each block's first forward
    for eager in (False, True):
        fd = dllm.generate(prompts(), method="freedave", draft_steps=4, eager_drafts=eager, **kw)
        assert torch.equal(fd.sequences, official) and (fd.nfe <= static.nfe).all()
    plain = dllm.generate(prompts(), method="static", fill_block_start=False, **kw)
    assert not (plain.decode_step[:, [0, 4]] == torch.tensor([1, 5])).all()  # by confidence, not first
