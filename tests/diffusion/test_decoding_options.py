"""Decoding options that match how the models are officially run: absolute block layout, eager drafting across
block boundaries, stopping a row at a block of EOS tokens, and NFE counted both ways. FreeDave stays static's
output under each of them, with and without the prefix cache."""
import pytest
import torch
from dllm_models import MASK, VOCAB, IntegerModel, PositionModel, random_transformer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylab.diffusion import generate
from raylab.diffusion.decoding import Forward, block_causal_mask, padded_gen_length, position_blocks

MODEL = random_transformer(3)


def test_absolute_layout_puts_blocks_at_multiples_of_the_block_size():
    # prompt 5, answer 8, block 4: the sequence is padded to 16 = 4 blocks; the prompt's last token shares
    # block 1 with the first three answer tokens
    assert padded_gen_length(5, 8, 4, "absolute") == 11 and padded_gen_length(5, 8, 4, "answer") == 8
    assert position_blocks(5, 11, 4, "absolute").tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert position_blocks(5, 8, 4, "answer").tolist() == [0] * 5 + [1] * 4 + [2] * 4
    mask = block_causal_mask(5, 11, 4, "absolute")
    assert mask[4, 7] and not mask[3, 4] and mask[8, 0] and not mask[7, 8]
    fwd = Forward(MODEL, 5, 11, 4, MASK, "block_causal", False, "absolute")
    assert torch.equal(fwd.mask, mask)
    out = generate(MODEL, torch.tensor([[1, 2, 3, 4, 5]]), method="static", gen_length=8, block_length=4,
                   mask_token_id=MASK, attention="block_causal", block_layout="absolute")
    assert out.sequences.shape == (1, 16) and not (out.sequences == MASK).any()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2), batch=st.integers(1, 3), prompt_len=st.integers(1, 6), gen=st.integers(1, 9),
       block_length=st.integers(1, 5), k=st.integers(1, 9), eager=st.booleans(), cache=st.booleans(),
       integer=st.booleans())
def test_freedave_equals_static_with_the_official_options(seed, batch, prompt_len, gen, block_length, k, eager,
                                                           cache, integer):
    model = IntegerModel(seed) if integer and not cache else MODEL
    prompt = torch.randint(0, MASK, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    kw = dict(gen_length=gen, block_length=block_length, mask_token_id=MASK, attention="block_causal",
              block_layout="absolute", use_cache=cache)
    static = generate(model, prompt, method="static", **kw)
    fd = generate(model, prompt, method="freedave", draft_steps=k, eager_drafts=eager, **kw)
    assert torch.equal(fd.sequences, static.sequences) and (fd.nfe <= static.nfe).all()
    if cache:
        plain = generate(model, prompt, method="freedave", draft_steps=k, eager_drafts=eager,
                         **{**kw, "use_cache": False})
        assert torch.equal(plain.sequences, fd.sequences) and torch.equal(plain.nfe, fd.nfe)


def test_eager_drafting_crosses_block_boundaries():
    # a model whose confidences never change: every draft verifies, so only the block boundary limits a round
    prompt = torch.tensor([[1, 2, 3]])
    kw = dict(gen_length=8, block_length=4, mask_token_id=MASK, draft_steps=8)
    blockwise = generate(PositionModel(), prompt, method="freedave", **kw)
    eager = generate(PositionModel(), prompt, method="freedave", eager_drafts=True, **kw)
    static = generate(PositionModel(), prompt, method="static", **kw)
    assert torch.equal(eager.sequences, static.sequences) and torch.equal(blockwise.sequences, static.sequences)
    assert int(eager.nfe) < int(blockwise.nfe)


class EOSAfterFirstBlock:
    """Answer positions 0-3 predict 5, later ones 7 (the EOS id here), each with a position-dependent margin."""

    vocab_size = VOCAB

    def __init__(self, prompt_len):
        self.P = prompt_len

    def __call__(self, ids):
        N, T = ids.shape
        logits = torch.zeros(N, T, VOCAB, dtype=torch.float64)
        pos = torch.arange(T)
        logits[:, pos, torch.where(pos < self.P + 4, 5, 7)] = 3.0 + pos.double() / T
        return logits


def test_a_row_stops_at_a_block_of_eos_tokens():
    prompt = torch.tensor([[1, 2]])
    kw = dict(gen_length=16, block_length=4, mask_token_id=MASK, eos_token_id=7)
    full = generate(EOSAfterFirstBlock(2), prompt, method="static", **kw)
    stop = generate(EOSAfterFirstBlock(2), prompt, method="static", stop_on_eos_block=True, **kw)
    fd = generate(EOSAfterFirstBlock(2), prompt, method="freedave", draft_steps=4, stop_on_eos_block=True, **kw)
    assert torch.equal(full.sequences, stop.sequences) and torch.equal(fd.sequences, stop.sequences)
    assert int(full.nfe) == 16 and int(stop.nfe) == 8  # block 1 (5s) and block 2 (EOS) decoded, then done
    with pytest.raises(ValueError, match="stop_on_eos_block: needs eos_token_id"):
        generate(MODEL, prompt, gen_length=4, mask_token_id=MASK, stop_on_eos_block=True)


def test_nfe_is_reported_both_ways():
    kw = dict(method="static", gen_length=8, block_length=4, mask_token_id=MASK, attention="block_causal",
              block_layout="absolute", use_cache=True)
    five = generate(MODEL, torch.tensor([[1, 2, 3, 4, 5]]), **kw)   # one complete prompt block: one prefill pass
    three = generate(MODEL, torch.tensor([[1, 2, 3]]), **kw)        # none: the prompt is fed with the answer
    assert int(five.model_calls) == int(five.nfe) + 1 and torch.equal(three.model_calls, three.nfe)
    plain = generate(MODEL, torch.tensor([[1, 2, 3, 4, 5]]), **{**kw, "use_cache": False})
    assert torch.equal(plain.model_calls, plain.nfe) and torch.equal(plain.sequences, five.sequences)


class RowCounter:
    """Wraps a model and records how many rows each call fed."""

    def __init__(self, model):
        self.model, self.rows = model, []
        self.vocab_size, self.max_length = model.vocab_size, model.max_length

    def __call__(self, ids, mask=None):
        self.rows.append(ids.shape[0])
        return self.model(ids) if mask is None else self.model(ids, mask)


@pytest.mark.parametrize("eager", [False, True])
def test_adaptive_drafts_under_a_token_budget_keep_static_output(eager):
    prompt = torch.randint(0, MASK, (6, 4), generator=torch.Generator().manual_seed(3))
    kw = dict(gen_length=12, block_length=4, mask_token_id=MASK, eager_drafts=eager)
    static = generate(MODEL, prompt, method="static", **kw)
    counter = RowCounter(MODEL)
    budget = 16 * 9  # 9 rows of 16 tokens: fewer than the 6 x 4 drafts that k = 4 would feed
    fd = generate(counter, prompt, method="freedave", draft_steps=4, adaptive_drafts=True, token_budget=budget,
                  **kw)
    assert torch.equal(fd.sequences, static.sequences) and (fd.nfe <= static.nfe).all()
    assert max(counter.rows[1:]) <= 9
    fixed = generate(MODEL, prompt, method="freedave", draft_steps=4, **kw)
    assert torch.equal(fixed.sequences, static.sequences)


@pytest.mark.parametrize("attention", ["full", "block_causal"])
@pytest.mark.parametrize("method", ["static", "freedave"])
def test_left_padded_rows_decode_as_they_would_alone(attention, method):
    from raylab.diffusion.native import random_model

    models = {"tiny": MODEL, "native": random_model("llada", seed=1, scale=8.0).double()}
    for name, model in models.items():
        mask_id = MASK if name == "tiny" else model.mask_token_id
        g = torch.Generator().manual_seed(4)
        prompts = [torch.randint(0, mask_id, (n,), generator=g) for n in (2, 5, 3)]
        P = max(len(p) for p in prompts)
        batch = torch.stack([torch.cat([torch.zeros(P - len(p), dtype=torch.long), p]) for p in prompts])
        kw = dict(method=method, gen_length=8, block_length=4, draft_steps=4, mask_token_id=mask_id,
                  attention=attention)
        out = generate(model, batch, prompt_lengths=torch.tensor([len(p) for p in prompts]), **kw)
        for i, p in enumerate(prompts):
            alone = generate(model, p[None], **kw)
            assert torch.equal(out.sequences[i, P:], alone.sequences[0, len(p):]), (name, i)
            assert int(out.nfe[i]) == int(alone.nfe[0])
    with pytest.raises(ValueError, match="prompt_lengths: expected 1 lengths in"):
        generate(MODEL, torch.tensor([[1, 2]]), gen_length=2, mask_token_id=MASK, prompt_lengths=torch.tensor([3]))


class CostedModel:
    """MODEL with a fake clock that each call moves on by its cost: `per_call` + `per_row` x rows fed."""

    def __init__(self, per_call: float, per_row: float):
        self.per_call, self.per_row, self.now = per_call, per_row, 0.0

    def __call__(self, x, *args, **kw):
        self.now += self.per_call + self.per_row * x.shape[0]
        return MODEL(x, *args, **kw)

    def forward_cached(self, x, *args, **kw):  # the prefix cache's calls cost the same
        self.now += self.per_call + self.per_row * x.shape[0]
        return MODEL.forward_cached(x, *args, **kw)

    def clock(self) -> float:
        return self.now


@pytest.mark.parametrize("cache", [False, True])
def test_cost_aware_drafts_climb_to_k_when_rows_are_free_and_stay_static_when_they_cost(cache):
    from raylab.diffusion.drafts import CostAwareDrafts

    prompt = torch.randint(0, MASK, (4, 3), generator=torch.Generator().manual_seed(5))
    kw = dict(gen_length=12, block_length=4, mask_token_id=MASK, attention="block_causal", use_cache=cache)
    static = generate(MODEL, prompt, method="static", **kw)
    fixed = generate(MODEL, prompt, method="freedave", draft_steps=4, **kw)
    for per_call, per_row in ((1.0, 0.0), (0.0, 1.0)):  # a GPU-like flat cost; a cost in the rows fed
        model = CostedModel(per_call, per_row)
        policy = CostAwareDrafts(4, clock=model.clock)
        picks = []
        for _ in range(40):
            d = policy.best(policy.context(3 + 12, 4))  # what the call will run (a pick between explorations)
            out = generate(model, prompt, method="freedave", draft_steps=4, draft_policy=policy, **kw)
            assert torch.equal(out.sequences, static.sequences)  # whatever it picks
            picks.append(d)
        best = policy.best(policy.context(15, 4))
        if per_row == 0.0:  # fewer calls are faster: it climbs until more drafts save no call (k's count)
            assert best > 1 and picks[-20:] == [best] * 20 and out.forward_calls == fixed.forward_calls
        else:  # a round over R*d rows never pays here: static stays best, and its calls are static's own
            assert best == 1 and picks[-30:] == [1] * 30 and out.forward_calls == static.forward_calls


def test_cost_aware_drafts_search_climbs_to_the_peak_and_backs_off_from_losers():
    from raylab.diffusion.drafts import CostAwareDrafts

    policy = CostAwareDrafts(8, explore_every=8)
    rate = {1: 10.0, 2: 14.0, 3: 17.0, 4: 16.0, 5: 12.0, 6: 9.0, 7: 8.0, 8: 7.0}  # a peak at 3
    picks = []
    for _ in range(400):
        d = policy.choose(20, 4)
        policy.observe(20, 4, d, 100, 100 / rate[d])
        picks.append(d)
    assert picks[:6] == [1, 2, 2, 3, 3, 4]  # static first, then up while it pays (twice each), until 4 loses
    assert policy.best(policy.context(20, 4)) == 3 and set(picks) == {1, 2, 3, 4}  # 5 and above never tried
    off_peak = sum(d != 3 for d in picks[200:])
    assert 0 < off_peak <= 4  # each losing neighbour is retried after waits that doubled up to 128 calls
    assert policy.context(20, 3) == policy.context(30, 4) != policy.context(20, 5)  # both round up to 2^n
    # timing noise (+-5% a call) where two drafts lose 5% to static: static stays in use nearly always
    noisy, g = CostAwareDrafts(8), torch.Generator().manual_seed(0)
    picks = []
    for _ in range(400):
        d = noisy.choose(20, 16)
        true = {1: 10.0, 2: 9.5}.get(d, 9.0 - d / 4)
        noisy.observe(20, 16, d, 100, 100 / (true * (1 + 0.1 * (float(torch.rand((), generator=g)) - 0.5))))
        picks.append(d)
    assert noisy.best(noisy.context(20, 16)) == 1 and sum(d != 1 for d in picks) <= 20
    # a neighbour measured twice, one lucky call (+40%) and one poor (-40%), does not take over from static
    fair = CostAwareDrafts(8)
    for rate in (10.0, 14.0, 6.0):
        fair.observe(20, 4, fair.choose(20, 4), 100, 100 / rate)
    assert fair.picks == {1: 1, 2: 2} and fair.best(fair.context(20, 4)) == 1
    with pytest.raises(ValueError, match="max_drafts: must be >= 1"):
        CostAwareDrafts(0)
    with pytest.raises(ValueError, match="draft_policy: picks the drafts itself"):
        generate(MODEL, torch.tensor([[1, 2]]), gen_length=4, mask_token_id=MASK, adaptive_drafts=True,
                 draft_policy=policy)
    with pytest.raises(ValueError, match="draft_policy: its max_drafts 8 is not draft_steps 4"):
        generate(MODEL, torch.tensor([[1, 2]]), gen_length=4, mask_token_id=MASK, draft_policy=policy)


def test_cost_aware_drafts_per_segment_of_rounds_in_continuous_batching():
    from raylab.diffusion.decoding import decode_stream
    from raylab.diffusion.drafts import CostAwareDrafts

    prompts = torch.randint(0, MASK, (40, 3), generator=torch.Generator().manual_seed(9))
    kw = dict(method="freedave", gen_length=8, block_length=4, draft_steps=4, mask_token_id=MASK)
    static = generate(MODEL, prompts, **{**kw, "method": "static"}).sequences
    for per_call, per_row in ((1.0, 0.0), (0.0, 1.0)):
        model = CostedModel(per_call, per_row)
        policy = CostAwareDrafts(4, clock=model.clock)
        queue, finished = list(prompts[4:]), {}

        def join():  # rows join whenever fewer than 4 decode: rounds of 3-4 rows (one context)
            return [queue.pop(0) for _ in range(min(len(queue), 4 - (len(prompts) - len(queue) - len(finished))))]

        def done(index, sequence, nfe, decode_step):
            finished[index] = sequence

        decode_stream(model, prompts[:4], join=join, done=done, draft_policy=policy, **kw)
        assert all(torch.equal(finished[i], static[i]) for i in range(len(prompts)))  # whatever it picks
        rounds = policy.context(3 + 8, 4, "round")  # rows of 11 tokens, 3 or 4 of them: (round, 16, 4)
        assert policy.calls[rounds] >= 40 // policy.rounds  # a pick per segment of 8 rounds (all but the tail)
        assert policy.best(rounds) > 1 if per_row == 0.0 else policy.best(rounds) == 1
    with pytest.raises(ValueError, match="draft_policy: picks the drafts itself"):
        decode_stream(MODEL, prompts[:1], join=list, done=print, token_budget=10, draft_policy=policy, **kw)


@pytest.mark.parametrize("method", ["static", "freedave"])
def test_rows_join_and_leave_between_forwards(method):
    from raylab.diffusion.decoding import decode_stream

    g = torch.Generator().manual_seed(8)
    prompts = torch.randint(0, MASK, (7, 3), generator=g)
    kw = dict(method=method, gen_length=8, block_length=4, draft_steps=4, mask_token_id=MASK)
    arrivals = [[prompts[2], prompts[3]], [], [prompts[4]], [prompts[5], prompts[6]]]  # one batch per forward
    joined, finished = [], {}

    def join():
        batch = arrivals.pop(0) if arrivals else []
        joined.append(len(batch))
        return batch

    def done(index, sequence, nfe, decode_step):
        finished[index] = (sequence, nfe, len(finished))

    total = decode_stream(MODEL, prompts[:2], join=join, done=done, **kw)
    assert total == 7 and sorted(finished) == list(range(7))
    for i in range(7):
        alone = generate(MODEL, prompts[i:i + 1], **kw)
        assert torch.equal(finished[i][0], alone.sequences[0]) and finished[i][1] == int(alone.nfe[0])
    assert finished[0][2] < finished[6][2]  # early rows left before the late ones ended


@pytest.mark.parametrize("attention", ["full", "block_causal"])
@pytest.mark.parametrize("method", ["static", "freedave"])
def test_rows_of_different_prompt_lengths_join_mid_flight(attention, method):
    from raylab.diffusion.decoding import decode_stream
    from raylab.diffusion.native import random_model

    model = random_model("dream", seed=2, scale=8.0).double()  # shifted logits: the prompt's end matters
    mask_id = model.mask_token_id
    g = torch.Generator().manual_seed(9)
    prompts = [torch.randint(0, mask_id, (n,), generator=g) for n in (3, 3, 2, 5, 3, 6, 2)]
    kw = dict(method=method, gen_length=8, block_length=4, draft_steps=4, mask_token_id=mask_id,
              shifted_logits=True, attention=attention)
    # rows 0, 1 start; a shorter one joins, then longer ones (each widens every row's padding)
    arrivals = [[prompts[2]], [prompts[3]], [], [prompts[4], prompts[5]], [prompts[6]]]
    finished = {}
    total = decode_stream(model, torch.stack(prompts[:2]), join=lambda: arrivals.pop(0) if arrivals else [],
                          done=lambda i, seq, nfe, step: finished.__setitem__(i, (seq, nfe, step)), **kw)
    assert total == 7 and sorted(finished) == list(range(7))
    for i, p in enumerate(prompts):
        alone = generate(model, p[None], **kw)
        sequence, nfe, step = finished[i]
        assert torch.equal(sequence, alone.sequences[0]) and nfe == int(alone.nfe[0]), i
        assert torch.equal(step, alone.decode_step[0])
