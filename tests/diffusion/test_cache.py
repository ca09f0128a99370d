"""The prefix KV cache for block-causal decoding is exact: same tokens, same NFE, same logits as without it."""
import pytest
import torch
from dllm_models import MASK, random_transformer
from hypothesis import given, settings
from hypothesis import strategies as st

from raylab.diffusion import generate
from raylab.diffusion.cache import CachedForward
from raylab.diffusion.decoding import Forward

MODEL = random_transformer(5)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), blocks=st.integers(1, 3), block_length=st.integers(1, 4), k=st.integers(1, 5),
       method=st.sampled_from(["static", "freedave", "parallel"]))
def test_cache_gives_the_same_decoding(batch, blocks, block_length, k, method):
    prompt = torch.randint(0, MASK, (batch, 3), generator=torch.Generator().manual_seed(blocks))
    kw = dict(method=method, gen_length=blocks * block_length, block_length=block_length, draft_steps=k,
              threshold=0.3, mask_token_id=MASK, attention="block_causal")
    plain, cached = generate(MODEL, prompt, **kw), generate(MODEL, prompt, use_cache=True, **kw)
    assert torch.equal(plain.sequences, cached.sequences) and torch.equal(plain.nfe, cached.nfe)


def test_cached_logits_equal_full_logits_and_only_the_current_block_is_fed():
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    P, G, L = 3, 6, 2
    full = Forward(MODEL, P, G, L, MASK, "block_causal", shifted_logits=False)
    cached = CachedForward(MODEL, prompt, G, L, MASK)
    rows = torch.arange(2)
    answer = torch.full((2, G), MASK)
    answer[0, :3] = torch.tensor([1, 7, 7])   # sequence 0: block 0 finished, block 1 started
    answer[1, :2] = torch.tensor([4, 4])      # sequence 1: block 0 finished
    x = torch.cat([prompt, answer], dim=1)
    want, got = full(x, rows), cached(x, rows)
    current = [slice(2, 4), slice(2, 4)]
    for b in range(2):
        torch.testing.assert_close(got[b, current[b]], want[b, current[b]], rtol=0, atol=1e-12)
    assert cached.last[2].shape[1] == 2 * L   # the finished block 0 (not yet kept) + the current block
    cached.commit(rows)
    assert cached.cached.tolist() == [P + L, P + L]
    got = cached(x, rows)
    assert cached.last[2].shape[1] == L       # now only the current block is fed
    for b in range(2):
        torch.testing.assert_close(got[b, current[b]], want[b, current[b]], rtol=0, atol=1e-12)


def test_cache_needs_block_causal_attention_and_a_cache_aware_model():
    import pytest

    with pytest.raises(ValueError, match="use_cache: the exact prefix cache needs attention='block_causal'"):
        generate(MODEL, torch.tensor([[1]]), gen_length=2, mask_token_id=MASK, use_cache=True)
    with pytest.raises(ValueError, match="use_cache: the model has no forward_cached method"):
        generate(lambda ids, mask: MODEL(ids, mask), torch.tensor([[1]]), gen_length=2, mask_token_id=MASK,
                 attention="block_causal", use_cache=True)


def test_drafts_share_their_sequences_cached_prefix():
    """Attention to one shared prefix per sequence equals attention to a copy per row (native GQA and TinyMDLM)."""
    from raylab.diffusion.native import random_model

    for model in (MODEL, random_model("sdar", seed=2, scale=4.0).double()):
        g = torch.Generator().manual_seed(0)
        B, C, S = 3, 6, 4
        vocab = model.vocab_size - 2
        prefix_ids = torch.randint(0, vocab, (B, C), generator=g)
        _, past = model.forward_cached(prefix_ids, torch.arange(C).expand(B, -1), None, None)
        owner = torch.tensor([0, 0, 2, 1, 2, 2, 0])  # drafts of three sequences, interleaved
        ids = torch.randint(0, vocab, (len(owner), S), generator=g)
        start = torch.tensor([6, 4, 5])[owner]       # sequences cached different lengths
        mask = torch.cat([(torch.arange(C)[None] < start[:, None])[:, None].expand(-1, S, -1),
                          torch.ones(len(owner), S, S, dtype=torch.bool)], dim=2)
        pos = start[:, None] + torch.arange(S)
        shared, _ = model.forward_cached(ids, pos, mask, past, owner=owner)
        copied, _ = model.forward_cached(ids, pos, mask, [(k[owner], v[owner]) for k, v in past])
        torch.testing.assert_close(shared, copied, rtol=0, atol=1e-10)


def test_dual_cache_is_exact_where_no_key_can_go_stale_and_freedave_still_equals_static():
    from dllm_models import random_transformer

    prompt = torch.randint(0, MASK, (3, 4), generator=torch.Generator().manual_seed(6))
    kw = dict(gen_length=12, block_length=4, mask_token_id=MASK)
    # one layer: its keys and values come from token and position alone, so the cached ones never go stale
    one_layer = random_transformer(7, n_layers=1)
    exact = generate(one_layer, prompt, method="static", **kw)
    cached = generate(one_layer, prompt, method="static", dual_cache=True, **kw)
    assert torch.equal(exact.sequences, cached.sequences) and torch.equal(exact.nfe, cached.nfe)
    # deeper: lossy in general, but FreeDave verifies against the same cached forward, so it equals static with it
    for shifted in (False, True):
        static = generate(MODEL, prompt, method="static", dual_cache=True, shifted_logits=shifted, **kw)
        fd = generate(MODEL, prompt, method="freedave", draft_steps=4, dual_cache=True, shifted_logits=shifted, **kw)
        assert torch.equal(static.sequences, fd.sequences) and (fd.nfe <= static.nfe).all()
    with pytest.raises(ValueError, match="dual_cache: the approximate dual cache is for full attention"):
        generate(MODEL, prompt, attention="block_causal", dual_cache=True, **kw)
