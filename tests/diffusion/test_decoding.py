"""FreeDave == static decoding, token for token, on random float64 models; NFE bounds; the parallel baseline;
shifted logits; one-line errors for bad input."""
import math

import pytest
import torch
from dllm_models import MASK, CountingModel, IntegerModel, PositionModel, random_transformer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylab.diffusion import generate
from raylab.diffusion.decoding import block_causal_mask

TRANSFORMERS = {seed: random_transformer(seed) for seed in range(3)}


def decode(model, prompt, method, **kw):
    kw.setdefault("mask_token_id", MASK)
    return generate(model, prompt, method=method, **kw)


def check_freedave_equals_static(model, prompt, gen_length, block_length, k, attention):
    kw = dict(gen_length=gen_length, block_length=block_length, attention=attention)
    static = decode(model, prompt, "static", **kw)
    fd = decode(model, prompt, "freedave", draft_steps=k, **kw)
    assert torch.equal(fd.sequences, static.sequences)
    assert torch.equal(static.nfe, torch.full_like(static.nfe, gen_length))
    assert (fd.nfe <= static.nfe).all()
    assert (fd.nfe >= math.ceil(gen_length / k)).all()
    # every batched call serves all unfinished sequences: the B x k drafts of a round are one forward
    assert fd.forward_calls == int(fd.nfe.max())
    # each token is fixed no later than static fixes it, and in static's order
    assert (fd.decode_step <= static.decode_step).all()
    order = static.decode_step.argsort(dim=1)
    assert (fd.decode_step.gather(1, order).diff(dim=1) >= 0).all()
    return static, fd


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2), batch=st.integers(1, 4), prompt_len=st.integers(1, 6), blocks=st.integers(1, 3),
       block_length=st.integers(1, 5), k=st.integers(1, 7), attention=st.sampled_from(["full", "block_causal"]),
       integer=st.booleans())
def test_freedave_equals_static_property(seed, batch, prompt_len, blocks, block_length, k, attention, integer):
    model = IntegerModel(seed) if integer else TRANSFORMERS[seed]
    prompt = torch.randint(0, MASK, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    check_freedave_equals_static(model, prompt, blocks * block_length, block_length, k, attention)


def test_batched_decoding_equals_one_sequence_at_a_time():
    model, prompt = TRANSFORMERS[1], torch.randint(0, MASK, (5, 4), generator=torch.Generator().manual_seed(7))
    batch = decode(model, prompt, "freedave", gen_length=12, block_length=4, draft_steps=5)
    for b in range(5):
        one = decode(model, prompt[b:b + 1], "freedave", gen_length=12, block_length=4, draft_steps=5)
        assert torch.equal(one.sequences[0], batch.sequences[b])
        assert one.nfe.item() == batch.nfe[b].item()


def test_draft_steps_one_is_static():
    static, fd = check_freedave_equals_static(TRANSFORMERS[0], torch.tensor([[1, 2, 3]]), 8, 4, 1, "full")
    assert torch.equal(fd.nfe, static.nfe) and torch.equal(fd.decode_step, static.decode_step)


@pytest.mark.parametrize("gen_length,block_length", [(12, 4), (12, 12), (10, 2)])
def test_confident_model_reaches_the_analytic_minimum(gen_length, block_length):
    """A model whose predictions ignore the context: every draft verifies, so a block costs one forward and
    the last one none (its final draft is verified by the forward of the one before): NFE = 1 + #blocks."""
    prompt = torch.zeros(2, 3, dtype=torch.long)
    static, fd = check_freedave_equals_static(PositionModel(), prompt, gen_length, block_length, block_length,
                                              "full")
    assert fd.nfe.tolist() == [1 + gen_length // block_length] * 2
    parallel = decode(PositionModel(), prompt, "parallel", gen_length=gen_length, block_length=block_length,
                      threshold=0.5)
    assert parallel.nfe.tolist() == [gen_length // block_length] * 2
    assert torch.equal(parallel.sequences, static.sequences)


def test_parallel_differs_from_static_where_confidences_say_so():
    prompt = torch.zeros(1, 2, dtype=torch.long)
    model = CountingModel(prompt_length=2)
    static = decode(model, prompt, "static", gen_length=6)
    assert static.sequences[0, 2:].tolist() == [1, 2, 3, 4, 5, 6]
    # logit 3 of 9 classes has confidence e^3 / (e^3 + 8) = 0.715: above 0.6 every masked token fills at once
    low = decode(model, prompt, "parallel", gen_length=6, threshold=0.6)
    assert low.sequences[0, 2:].tolist() == [1, 0, 0, 0, 0, 0] and low.nfe.item() == 1
    high = decode(model, prompt, "parallel", gen_length=6, threshold=0.99)
    assert torch.equal(high.sequences, static.sequences) and high.nfe.item() == 6
    # FreeDave's draft 2 guesses the same 0 and fails verification every round: lossless, but no faster
    fd = decode(model, prompt, "freedave", gen_length=6, draft_steps=6)
    assert torch.equal(fd.sequences, static.sequences) and fd.nfe.item() == 6


def test_shifted_logits_match_the_unshifted_model():
    base = TRANSFORMERS[2]

    def dream_style(input_ids):  # logits at i predict token i + 1
        logits = base(input_ids)
        return torch.cat([logits[:, 1:], torch.zeros_like(logits[:, :1])], dim=1)

    prompt = torch.tensor([[1, 2, 3, 4]])
    for method in ("static", "freedave"):
        want = decode(base, prompt, method, gen_length=8, block_length=4)
        got = decode(dream_style, prompt, method, gen_length=8, block_length=4, shifted_logits=True)
        assert torch.equal(want.sequences, got.sequences)


def test_block_causal_mask_hides_later_blocks():
    mask = block_causal_mask(prompt_len=2, gen_length=4, block_length=2)
    assert mask.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("kw,message", [
    (dict(gen_length=10, block_length=4), "block_length: 4 does not divide gen_length 10"),
    (dict(gen_length=40), "exceeds the model's context of 40 tokens"),
    (dict(gen_length=8, mask_token_id=9), "mask_token_id: 9 is outside the vocabulary (size 9)"),
    (dict(gen_length=8, draft_steps=0), "draft_steps: must be >= 1"),
    (dict(gen_length=8, method="beam"), "method: 'beam' is not one of"),
    (dict(gen_length=8, attention="causal"), "attention: 'causal' is not one of"),
    (dict(gen_length=0), "gen_length: must be >= 1"),
])
def test_bad_inputs_give_one_line_errors(kw, message):
    with pytest.raises(ValueError) as err:
        generate(TRANSFORMERS[0], torch.tensor([[1, 2]]), **{"mask_token_id": MASK, **kw})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_mask_id_outside_vocabulary_of_a_plain_callable_is_caught_at_the_first_forward():
    with pytest.raises(ValueError, match="mask_token_id: 20 is outside the vocabulary \\(size 9\\)"):
        generate(lambda ids: torch.zeros(*ids.shape, 9), torch.tensor([[1, 2]]), gen_length=4, mask_token_id=20)


def test_prompt_with_a_mask_token_is_refused():
    with pytest.raises(ValueError, match="prompt_ids: the prompt contains the mask token 8"):
        generate(TRANSFORMERS[0], torch.tensor([[1, MASK]]), gen_length=4, mask_token_id=MASK)
