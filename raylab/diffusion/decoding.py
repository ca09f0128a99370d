"""Decoding for masked diffusion language models: static, parallel (threshold) and FreeDave. Pure torch.

    from raylab.diffusion import generate
    out = generate(model, prompt_ids, method="freedave", gen_length=16, block_length=8, draft_steps=8,
                   mask_token_id=model.mask_token_id)
    out.sequences, out.nfe, out.tokens_per_nfe, out.decode_step

The answer (`gen_length` masked tokens after the prompt) is decoded block by block (semi-autoregressive): a step
only fills masked tokens of the first block that still has one.

- static: each forward fills the single most confident masked token (confidence = max softmax probability;
  ties go to the lowest position, and the argmax token to the lowest id, the same rule everywhere).
- parallel: each forward fills every masked token of the block whose confidence exceeds `threshold`, at least
  the most confident one. Fewer forwards, but not the static output (lossy).
- freedave: from the logits of state s, draft j fills the j most confident masked tokens of the block with their
  argmax (draft 1 is the static successor of s). One batched forward over the drafts of every sequence gives
  each draft's own static successor; sequence b accepts drafts 1..a_b while draft j+1 equals the successor of
  draft j, and keeps the logits of its last accepted draft for the next round. The output is the static output
  token for token, in between 1/k and 1 times static's forwards.

Options that match how the models are officially run (defaults in brackets):
- `block_layout` ["answer"]: "answer" lays blocks from the prompt's end (the prompt is one block); "absolute"
  puts them at multiples of `block_length` from position 0 and pads the answer to fill the last block, as
  SDAR/TraDo are trained and run (`load_diffusion_lm` sets it for them).
- `eager_drafts` [False]: FreeDave's drafts continue into the next blocks (ranked block by block from the same
  logits) instead of stopping at the block's end; the official TraDo setting is block 4 with k = 8, eager.
- `stop_on_eos_block` [False] with `eos_token_id`: a row is done once a finished block holds only EOS tokens
  (the rest of its answer becomes EOS, at no forward).
- `adaptive_drafts` [False], `token_budget` [None]: FreeDave's drafts per row follow its recent acceptance, and a
  verification call feeds at most `token_budget` tokens (never fewer rows than sequences).
- `draft_policy` [None]: a `raylab.diffusion.drafts.CostAwareDrafts` picks the drafts per row of the call (at
  most `draft_steps`) from the answer tokens per second its earlier calls measured, and is told this call's;
  one draft runs the static code path itself (same output whatever it picks; NFE depends on timing).
- `dual_cache` [False]: the approximate (lossy) dual cache for full attention (`raylab.diffusion.cache`).
- `fill_block_start` [False; `load_diffusion_lm` sets it for Dream]: when a block starts (all its tokens masked),
  the step fills the block's first token with its argmax whatever its confidence, as Fast-dLLM's Dream block
  decoding does (the forward that enters a block fixes `x[block_start]` from the shifted logits, i.e. the
  prediction made at the previous token, and nothing else; later steps rank by confidence). Static, parallel
  and FreeDave apply the same rule, so FreeDave still equals static.
- NFE both ways: `nfe` counts decoding forwards per sequence, `model_calls` every model pass over it (also
  the prefix cache's prefill); `forward_calls` counts batched calls.

Prompts of different lengths share a batch through left padding: `prompt_lengths` (B,) gives each row's real
length (its tokens end the row); pad keys are masked out, positions start at each row's first real token, and
the model is called as `model(input_ids, attention_mask, positions=...)` (answer layout, no cache).

Model contract: `model(input_ids)` (full attention) or `model(input_ids, attention_mask)` (block-causal, a bool
(N, T, T) tensor, True where a query may attend a key) returning logits (N, T, V), or an object with `.logits`.
`shifted_logits=True` is for Dream-style models whose logits at i predict token i+1. With block-causal attention
and a model that implements `forward_cached`, `use_cache=True` keeps the keys and values of the prompt and of
finished blocks (`raylab.diffusion.cache`); the output is the same as without the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from raylab.diffusion.blocks import block_causal_mask, padded_gen_length, position_blocks
from raylab.diffusion.cache import CachedForward, DualCacheForward
from raylab.diffusion.drafts import CostAwareDrafts

Method = Literal["static", "parallel", "freedave"]


Layout = Literal["answer", "absolute"]


@dataclass
class DecodeResult:
    sequences: torch.Tensor     # (B, P + G) prompt followed by the decoded answer
    nfe: torch.Tensor           # (B,) decoding forwards each sequence took part in
    decode_step: torch.Tensor   # (B, G) the forward (1-based, per sequence) whose logits fixed each answer token
    forward_calls: int          # batched model calls made (a verification round over B x k drafts is one call)
    model_calls: torch.Tensor   # (B,) every model pass over each sequence: nfe plus prefill (and KV-store) passes

    @property
    def gen_length(self) -> int:
        return self.decode_step.shape[1]

    @property
    def tokens_per_nfe(self) -> float:
        """Answer tokens per forward pass, averaged over the batch (the paper's throughput over NFEs)."""
        return float(self.gen_length / self.nfe.double().mean())


def check_inputs(prompt_ids: torch.Tensor, *, gen_length: int, block_length: int, draft_steps: int,
                 threshold: float, mask_token_id: int, vocab_size: int | None, max_length: int | None,
                 shifted_logits: bool, method: str, attention: str, block_layout: str = "answer",
                 eos_token_id: int | None = None, stop_on_eos_block: bool = False) -> None:
    """One-line ValueErrors naming the bad argument, raised before any forward pass."""
    if method not in ("static", "parallel", "freedave"):
        raise ValueError(f"method: {method!r} is not one of 'static', 'parallel', 'freedave'")
    if attention not in ("full", "block_causal"):
        raise ValueError(f"attention: {attention!r} is not one of 'full', 'block_causal'")
    if prompt_ids.ndim != 2 or prompt_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"prompt_ids: expected an integer tensor of shape (batch, length), got "
                         f"{tuple(prompt_ids.shape)} {prompt_ids.dtype}")
    if gen_length < 1:
        raise ValueError(f"gen_length: must be >= 1, got {gen_length}")
    if block_layout not in ("answer", "absolute"):
        raise ValueError(f"block_layout: {block_layout!r} is not one of 'answer', 'absolute'")
    if block_length < 1 or (block_layout == "answer" and gen_length % block_length):
        raise ValueError(f"block_length: {block_length} does not divide gen_length {gen_length}")
    if stop_on_eos_block and eos_token_id is None:
        raise ValueError("stop_on_eos_block: needs eos_token_id")
    if eos_token_id is not None and (eos_token_id < 0 or (vocab_size is not None and eos_token_id >= vocab_size)):
        raise ValueError(f"eos_token_id: {eos_token_id} is outside the vocabulary (size {vocab_size})")
    if draft_steps < 1:
        raise ValueError(f"draft_steps: must be >= 1, got {draft_steps}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: must be in (0, 1], got {threshold}")
    if mask_token_id < 0 or (vocab_size is not None and mask_token_id >= vocab_size):
        raise ValueError(f"mask_token_id: {mask_token_id} is outside the vocabulary (size {vocab_size})")
    if vocab_size is not None and prompt_ids.numel() and (prompt_ids.min() < 0 or prompt_ids.max() >= vocab_size):
        raise ValueError(f"prompt_ids: token ids must lie in [0, {vocab_size}), got "
                         f"[{int(prompt_ids.min())}, {int(prompt_ids.max())}]")
    if (prompt_ids == mask_token_id).any():
        raise ValueError(f"prompt_ids: the prompt contains the mask token {mask_token_id}")
    padded = padded_gen_length(prompt_ids.shape[1], gen_length, block_length, block_layout)
    if max_length is not None and prompt_ids.shape[1] + padded > max_length:
        raise ValueError(f"prompt_ids: prompt length {prompt_ids.shape[1]} + gen_length {padded} exceeds the "
                         f"model's context of {max_length} tokens")
    if shifted_logits and prompt_ids.shape[1] < 1:
        raise ValueError("prompt_ids: shifted logits need a prompt of at least one token")


def check_policy(policy: CostAwareDrafts | None, draft_steps: int, adaptive: bool, token_budget: int | None):
    """A draft policy picks the drafts itself, up to draft_steps: one-line errors where the options disagree."""
    if policy is None:
        return
    if adaptive or token_budget is not None:
        raise ValueError("draft_policy: picks the drafts itself (not with adaptive_drafts or token_budget)")
    if policy.k != draft_steps:  # its picks above draft_steps would all run draft_steps: a search over equals
        raise ValueError(f"draft_policy: its max_drafts {policy.k} is not draft_steps {draft_steps}")


def model_limits(model) -> tuple[int | None, int | None]:
    """(vocab size, context length) when the model says them (attributes, or a Hugging Face config)."""
    cfg = getattr(model, "config", None)
    vocab = getattr(model, "vocab_size", None) or getattr(cfg, "vocab_size", None)
    ctx = getattr(model, "max_length", None) or getattr(cfg, "max_position_embeddings", None)
    return vocab, ctx


class Forward:
    """Calls the model on full sequences and returns aligned answer logits (N, G, V) (logits[:, i] is for answer
    token i). Counts batched calls."""

    def __init__(self, model: Callable, prompt_len: int, gen_length: int, block_length: int, mask_token_id: int,
                 attention: str, shifted_logits: bool, layout: str = "answer",
                 prompt_lengths: torch.Tensor | None = None):
        self.model, self.mask_token_id, self.shifted = model, mask_token_id, shifted_logits
        self.gen_length, self.block_length, self.layout, self.attention = gen_length, block_length, layout, attention
        self.calls, self.prefill_passes = 0, 0
        self.resize(prompt_len, prompt_lengths)

    def resize(self, prompt_len: int, prompt_lengths: torch.Tensor | None) -> None:
        """Rows are `prompt_len` prompt tokens (left-padded to it when `prompt_lengths` gives real lengths)."""
        self.prompt_len = prompt_len
        self.mask = (block_causal_mask(prompt_len, self.gen_length, self.block_length, self.layout)
                     if self.attention == "block_causal" else None)
        self.padding = None
        if prompt_lengths is not None:  # left padding: pad keys are invisible, positions start at each prompt
            pos = torch.arange(prompt_len + self.gen_length, device=prompt_lengths.device)
            pad = prompt_len - prompt_lengths
            self.padding = pos[None, :] >= pad[:, None], (pos[None, :] - pad[:, None]).clamp(min=0)

    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.padding is not None:
            real, positions = self.padding[0][rows], self.padding[1][rows]
            T = x.shape[1]
            mask = real[:, None, :] if self.mask is None else self.mask.to(x.device)[None] & real[:, None, :]
            mask = mask.expand(x.shape[0], T, T) | torch.eye(T, dtype=torch.bool, device=x.device)
            out = self.model(x, mask, positions=positions)
        elif self.mask is None:
            out = self.model(x)
        else:
            out = self.model(x, self.mask.to(x.device).expand(x.shape[0], -1, -1))
        logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, tuple) else out)
        if logits.shape[-1] <= self.mask_token_id:
            raise ValueError(f"mask_token_id: {self.mask_token_id} is outside the vocabulary "
                             f"(size {logits.shape[-1]})")
        start = self.prompt_len - 1 if self.shifted else self.prompt_len
        return logits[:, start:start + x.shape[1] - self.prompt_len]


def confidences(logits: torch.Tensor, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-confidence, argmax token) of every position; the mask token itself is never predicted."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits.clone()
    logits[..., mask_token_id] = -torch.inf  # predicting the mask would leave the position masked forever
    return torch.log_softmax(logits, dim=-1).max(dim=-1)


def fresh_block_starts(answer: torch.Tensor, block: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """(N, G) bool: the first position of every block whose tokens are all still masked."""
    b = block - block.min()
    in_block = torch.nn.functional.one_hot(b, int(b.max()) + 1).bool()                          # (G, n)
    started = ((answer != mask_token_id)[:, :, None] & in_block[None]).any(dim=1)              # (N, n)
    first = torch.ones_like(b, dtype=torch.bool)
    first[1:] = b[1:] != b[:-1]
    return first[None, :] & ~started[:, b]


def scores(confident: tuple[torch.Tensor, torch.Tensor], answer: torch.Tensor, block: torch.Tensor,
           mask_token_id: int, fill_start: bool = False):
    """For answer tokens `answer` (N, G) with block ids `block` (G,) and their `confidences(logits)`:
    (log-confidence with -inf where not decodable now, argmax token). Decodable = masked and in the first block
    that still has a mask. `fill_start`: a block's first token, while its whole block is masked, ranks first
    (confidence +inf)."""
    logp, token = confident
    if fill_start:
        logp = torch.where(fresh_block_starts(answer, block, mask_token_id), torch.inf, logp)
    masked = answer == mask_token_id
    first = torch.where(masked, block, _NO_BLOCK).min(dim=1, keepdim=True).values
    decodable = masked & (block[None, :] == first)
    return torch.where(decodable, logp, -torch.inf), token


_NO_BLOCK = 1 << 40  # a block id above every real one (what an unmasked position counts as)


def ranking(conf: torch.Tensor) -> torch.Tensor:
    """Positions by confidence, highest first; equal confidences keep position order (stable sort)."""
    return torch.sort(conf, dim=1, descending=True, stable=True).indices


def most_confident(conf: torch.Tensor) -> torch.Tensor:
    """(N, 1): `ranking(conf)[:, :1]` without the sort (argmax returns the first of equal maxima)."""
    return conf.argmax(dim=1, keepdim=True)


def generate(model: Callable, prompt_ids: torch.Tensor, *, method: Method = "freedave", gen_length: int,
             block_length: int | None = None, draft_steps: int = 4, threshold: float = 0.9, mask_token_id: int,
             shifted_logits: bool = False, attention: str = "full", use_cache: bool = False,
             vocab_size: int | None = None, max_length: int | None = None, block_layout: Layout = "answer",
             eager_drafts: bool = False, eos_token_id: int | None = None, stop_on_eos_block: bool = False,
             adaptive_drafts: bool = False, token_budget: int | None = None,
             prompt_lengths: torch.Tensor | None = None, dual_cache: bool = False,
             draft_policy: CostAwareDrafts | None = None, fill_block_start: bool = False) -> DecodeResult:
    """Decodes `gen_length` tokens after each prompt in the batch (see the module docstring)."""
    if prompt_ids.ndim == 1:
        prompt_ids = prompt_ids[None]
    block_length = block_length or gen_length
    vocab, ctx = model_limits(model)
    check_inputs(prompt_ids, gen_length=gen_length, block_length=block_length, draft_steps=draft_steps,
                 threshold=threshold, mask_token_id=mask_token_id, vocab_size=vocab_size or vocab,
                 max_length=max_length or ctx, shifted_logits=shifted_logits, method=method, attention=attention,
                 block_layout=block_layout, eos_token_id=eos_token_id, stop_on_eos_block=stop_on_eos_block)
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"token_budget: must be >= 1, got {token_budget}")
    check_policy(draft_policy, draft_steps, adaptive_drafts, token_budget)
    B, P = prompt_ids.shape
    if prompt_lengths is not None:
        prompt_lengths = torch.as_tensor(prompt_lengths, device=prompt_ids.device)
        if prompt_lengths.shape != (B,) or prompt_lengths.min() < 1 or prompt_lengths.max() > P:
            raise ValueError(f"prompt_lengths: expected {B} lengths in [1, {P}], got {prompt_lengths.tolist()}")
        if block_layout == "absolute" or use_cache:
            raise ValueError("prompt_lengths: left-padded prompts need block_layout='answer' and no cache")
    G = padded_gen_length(P, gen_length, block_length, block_layout)
    if dual_cache:
        if attention != "full" or block_layout != "answer" or use_cache or prompt_lengths is not None:
            raise ValueError("dual_cache: the approximate dual cache is for full attention with the answer layout "
                             "(not with use_cache or prompt_lengths)")
        forward = DualCacheForward(model, prompt_ids, G, block_length, mask_token_id, shifted_logits)
    elif use_cache:
        if attention != "block_causal" or shifted_logits:
            raise ValueError("use_cache: the exact prefix cache needs attention='block_causal' and aligned logits")
        forward = CachedForward(model, prompt_ids, G, block_length, mask_token_id, block_layout,
                                feed_to_end=eager_drafts and method == "freedave")
    else:
        forward = Forward(model, P, G, block_length, mask_token_id, attention, shifted_logits, block_layout,
                          prompt_lengths)
    answer = torch.full((B, G), mask_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    block = position_blocks(P, G, block_length, block_layout, prompt_ids.device)[P:]
    state = _State(prompt_ids, answer, forward, block, block_length, mask_token_id,
                   eos_token_id if stop_on_eos_block else None, fill_start=fill_block_start)
    with torch.no_grad():
        if draft_policy is not None and method == "freedave":  # the drafts of this call, timed for the policy
            drafts = draft_policy.choose(P + G, B)
            started = _clock(draft_policy, answer)
            if drafts == 1:
                _one_forward_per_step(state, None)
            else:
                _freedave(state, min(draft_steps, drafts), eager_drafts)
            draft_policy.observe(P + G, B, drafts, B * G, _clock(draft_policy, answer) - started)
        elif method == "freedave":
            _freedave(state, draft_steps, eager_drafts, adaptive_drafts, token_budget)
        else:
            _one_forward_per_step(state, threshold if method == "parallel" else None)
    return DecodeResult(torch.cat([prompt_ids, state.answer], dim=1), state.nfe, state.step, forward.calls,
                        state.nfe + forward.prefill_passes)


def decode_stream(model: Callable, prompt_ids: torch.Tensor, *, join: Callable[[], list],
                  done: Callable[[int, torch.Tensor, int, torch.Tensor], None], method: Method = "freedave",
                  gen_length: int, block_length: int | None = None, draft_steps: int = 4, threshold: float = 0.9,
                  mask_token_id: int, shifted_logits: bool = False, attention: str = "full",
                  eager_drafts: bool = False, adaptive_drafts: bool = False, token_budget: int | None = None,
                  eos_token_id: int | None = None, stop_on_eos_block: bool = False,
                  fill_block_start: bool = False, prompt_lengths: torch.Tensor | None = None,
                  draft_policy: CostAwareDrafts | None = None) -> int:
    """Continuous batching: decodes `prompt_ids` while rows join and leave between forwards.

    Before each forward `join()` may return more prompts (1-D, of any length), which start decoding with the
    batch; when a row finishes, `done(index, sequence, nfe, decode_step)` is called at once (index counts rows in
    order of arrival; `sequence` is the row's own prompt, unpadded, and its answer). Rows of different prompt
    lengths share the calls by left padding (as `generate(..., prompt_lengths=...)`): `prompt_ids` may be
    left-padded already (`prompt_lengths` its rows' real lengths), and a longer joining prompt widens the padding
    of every row. Each row's result equals `generate` on it alone (the same rules, one row's logits never depend
    on another's). Plain forwards only (answer layout, no caches). `draft_policy` picks FreeDave's drafts per
    row segment by segment of rounds (see `raylab.diffusion.drafts`). Returns the number of rows decoded."""
    block_length = block_length or gen_length
    vocab, ctx = model_limits(model)
    check_inputs(prompt_ids, gen_length=gen_length, block_length=block_length, draft_steps=draft_steps,
                 threshold=threshold, mask_token_id=mask_token_id, vocab_size=vocab, max_length=ctx,
                 shifted_logits=shifted_logits, method=method, attention=attention, eos_token_id=eos_token_id,
                 stop_on_eos_block=stop_on_eos_block)
    check_policy(draft_policy, draft_steps, adaptive_drafts, token_budget)
    B, P = prompt_ids.shape
    if prompt_lengths is not None:
        prompt_lengths = torch.as_tensor(prompt_lengths, device=prompt_ids.device)
    forward = Forward(model, P, gen_length, block_length, mask_token_id, attention, shifted_logits,
                      prompt_lengths=prompt_lengths)
    answer = torch.full((B, gen_length), mask_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    block = position_blocks(P, gen_length, block_length, "answer", prompt_ids.device)[P:]
    state = _State(prompt_ids, answer, forward, block, block_length, mask_token_id,
                   eos_token_id if stop_on_eos_block else None, join=join, done=done, fill_start=fill_block_start,
                   lengths=prompt_lengths)
    state.check = lambda p: check_inputs(  # a joining prompt is checked as a call's would be
        p[None], gen_length=gen_length, block_length=block_length, draft_steps=draft_steps, threshold=threshold,
        mask_token_id=mask_token_id, vocab_size=vocab, max_length=ctx, shifted_logits=shifted_logits,
        method=method, attention=attention, eos_token_id=eos_token_id, stop_on_eos_block=stop_on_eos_block)
    with torch.no_grad():
        if method == "freedave":
            _freedave(state, draft_steps, eager_drafts, adaptive_drafts, token_budget, draft_policy)
        else:
            _one_forward_per_step(state, threshold if method == "parallel" else None)
    state.release()
    return len(state.prompt)


def left_pad(prompts: list, mask_token_id: int | None, width: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1-D prompts stacked, left-padded to `width` or the longest; their real lengths, None when none is padded).
    The pad token is any token but the mask: padding is never attended (`prompt_lengths` masks it)."""
    P = width or max(len(p) for p in prompts)
    if all(len(p) == P for p in prompts):
        return torch.stack(prompts), None
    fill = 1 if mask_token_id == 0 else 0
    padded = [torch.cat([p.new_full((P - len(p),), fill), p]) for p in prompts]
    return torch.stack(padded), torch.tensor([len(p) for p in prompts], device=prompts[0].device)


class _State:
    """The batch being decoded: answers, per-sequence forward counts and the step that fixed each token."""

    def __init__(self, prompt_ids, answer, forward, block, block_length, mask_token_id, stop_eos,
                 join: Callable | None = None, done: Callable | None = None, fill_start: bool = False,
                 lengths: torch.Tensor | None = None):
        self.fill_start = fill_start  # a block's first token is filled first (Dream's official block decoding)
        self.lengths = lengths  # real prompt lengths when rows are left-padded (continuous batching), else None
        self.check: Callable | None = None
        self.prompt, self.answer, self.forward = prompt_ids, answer, forward
        self.block, self.L, self.mask_id, self.stop_eos = block, block_length, mask_token_id, stop_eos
        self.nfe = torch.zeros(answer.shape[0], dtype=torch.long, device=answer.device)
        self.step = torch.zeros_like(answer)
        self.join, self.done = join, done  # continuous batching (`decode_stream`); None for `generate`
        self.delivered = torch.zeros(answer.shape[0], dtype=torch.bool, device=answer.device)

    def active(self) -> torch.Tensor:
        return (self.answer == self.mask_id).any(dim=1).nonzero().squeeze(1)

    def admit(self) -> torch.Tensor:
        """Rows that join between forwards (`join()` gives 1-D prompts); their indices. Prompts of another length
        than the batch's are left-padded, and a longer one widens every row's padding."""
        prompts = self.join() if self.join is not None else []
        if not len(prompts):
            return self.nfe[:0]
        prompts = [p.to(self.prompt.device) for p in prompts]
        for p in prompts:
            self.check(p)
        P, width = self.prompt.shape[1], max(len(p) for p in prompts)
        if self.lengths is None and any(len(p) != P for p in prompts):
            self.lengths = torch.full((len(self.prompt),), P, device=self.prompt.device)
        if width > P:  # every row gets more left padding
            self.prompt = left_pad(list(self.prompt), self.mask_id, width)[0]
            P = width
        new = left_pad(prompts, self.mask_id, P)[0]
        n, old = len(new), len(self.prompt)
        if self.lengths is not None:
            self.lengths = torch.cat([self.lengths, torch.tensor([len(p) for p in prompts], device=new.device)])
            self.forward.resize(P, self.lengths)
        self.prompt = torch.cat([self.prompt, new])
        self.answer = torch.cat([self.answer, torch.full((n, self.answer.shape[1]), self.mask_id,
                                                         dtype=self.answer.dtype, device=self.answer.device)])
        self.nfe = torch.cat([self.nfe, self.nfe.new_zeros(n)])
        self.step = torch.cat([self.step, self.step.new_zeros(n, self.step.shape[1])])
        self.delivered = torch.cat([self.delivered, self.delivered.new_zeros(n)])
        return torch.arange(old, old + n, device=self.nfe.device)

    def release(self) -> None:
        """Hands every newly finished row to `done(index, sequence, nfe, decode_step)`: rows leave as they end."""
        if self.done is None:
            return
        finished = ~(self.answer == self.mask_id).any(dim=1) & ~self.delivered
        P = self.prompt.shape[1]
        for i in finished.nonzero().squeeze(1).tolist():
            prompt = self.prompt[i] if self.lengths is None else self.prompt[i, P - int(self.lengths[i]):]
            self.done(i, torch.cat([prompt, self.answer[i]]), int(self.nfe[i]), self.step[i].clone())
        self.delivered |= finished
        if self.lengths is not None and finished.any() and not self.delivered.all():
            need = int(self.lengths[~self.delivered].max())  # the padding shrinks when the longest rows leave
            if need < P:
                self.prompt = self.prompt[:, P - need:]
                self.forward.resize(need, self.lengths.clamp(max=need))

    def stop_after_eos_blocks(self, rows: torch.Tensor) -> None:
        """A row whose answer holds a finished block of EOS tokens only is done: every later answer position
        becomes EOS (fixed at the row's current forward, costing none)."""
        if self.stop_eos is None or not len(rows):
            return
        answer, block = self.answer[rows], self.block - self.block.min()
        n = int(block.max()) + 1
        in_block = torch.nn.functional.one_hot(block, n).bool()                          # (G, n)
        not_eos = ((answer != self.stop_eos)[:, :, None] & in_block[None]).any(dim=1)    # (R, n)
        first = torch.where(~not_eos, torch.arange(n, device=answer.device), n).min(dim=1).values
        after = block[None, :] > first[:, None]
        fill = after & (answer == self.mask_id)
        self.step[rows] = torch.where(fill, self.nfe[rows, None], self.step[rows])
        self.answer[rows] = torch.where(after, self.stop_eos, answer)


def _one_forward_per_step(s: _State, threshold: float | None) -> None:
    """Static (threshold None) and parallel decoding: one forward, then fill one / all confident tokens."""
    while len(rows := _rows_now(s)):
        answer = s.answer[rows]
        confident = confidences(_call(s, rows, answer), s.mask_id)
        _commit(s, torch.arange(len(rows), device=rows.device))
        s.nfe[rows] += 1
        conf, token = scores(confident, answer, s.block, s.mask_id, s.fill_start)
        fill = torch.zeros_like(answer, dtype=torch.bool).scatter(1, most_confident(conf), True)
        if threshold is not None:  # a block's first token, when filled first, is that forward's only one
            fill |= (conf.exp() > threshold) & ~(conf == torch.inf).any(dim=1, keepdim=True)
        s.answer[rows] = torch.where(fill, token, answer)
        s.step[rows] = torch.where(fill, s.nfe[rows, None], s.step[rows])
        s.stop_after_eos_blocks(rows)
        s.release()


def _rows_now(s: _State) -> torch.Tensor:
    """The rows still decoding, then any that join now (new rows have the highest indices: still in order)."""
    rows, new = s.active(), s.admit()
    return torch.cat([rows, new]) if len(new) else rows


def draft_order(confident: tuple[torch.Tensor, torch.Tensor], answer: torch.Tensor, block: torch.Tensor,
                mask_token_id: int, eager: bool, fill_start: bool = False, scored: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions in drafting order, how many can be drafted, argmax tokens), from the `confidences` of the
    current states. Not eager: the current block's masked tokens by confidence. Eager: then those of the
    following blocks, block by block, each by the same logits' confidence (drafts across a block boundary;
    verification keeps the output static's). `fill_start`: each untouched block's first token leads its block
    (as static fills it). `scored`: `scores(confident, answer, ...)`'s confidences when already known."""
    if not eager:
        conf, token = (scored, confident[1]) if scored is not None else scores(confident, answer, block,
                                                                                mask_token_id, fill_start)
        return ranking(conf), (conf > -torch.inf).sum(dim=1), token
    logp, token = confident
    if fill_start:
        logp = torch.where(fresh_block_starts(answer, block, mask_token_id), torch.inf, logp)
    masked = answer == mask_token_id
    order = ranking(torch.where(masked, logp, -torch.inf))
    key = torch.where(masked, block[None, :], _NO_BLOCK).gather(1, order)
    order = order.gather(1, torch.sort(key, dim=1, stable=True).indices)
    return order, masked.sum(dim=1), token


def fit_budget(n_drafts: torch.Tensor, rows_allowed: int) -> torch.Tensor:
    """Scales the drafts per row down so that they sum to at most `rows_allowed` (each row keeps one)."""
    total = int(n_drafts.sum())
    if total <= rows_allowed:
        return n_drafts
    return (n_drafts.double() * rows_allowed / total).floor().long().clamp(min=1)


def _freedave(s: _State, k: int, eager: bool, adaptive: bool = False, token_budget: int | None = None,
              policy: CostAwareDrafts | None = None) -> None:
    """Draft k static states from one forward, verify all drafts of all sequences in the next forward.

    `adaptive`: each row drafts as many states as its last round suggests (one more than it accepted, or twice
    as many when it accepted all), at most k. `token_budget`: a verification call feeds at most this many tokens
    (rows x sequence length), but never fewer rows than there are sequences (static's cost); drafts are cut
    proportionally to fit. Any number of drafts verifies to the same output.

    `policy` (`CostAwareDrafts`; continuous batching, where there is no call to time): rounds go in segments of
    `policy.rounds` with one draft count, the policy's pick for a round of that many rows; each segment (its
    wall time and the tokens it advanced) is reported to it; one draft per row is a static step."""
    k = min(k, s.answer.shape[1], s.answer.shape[1] if eager else s.L)  # not eager: drafts stay inside a block
    want = torch.full_like(s.nfe, k) if adaptive else None  # drafts each row will make
    rows = s.active()
    logits = _call(s, rows, s.answer[rows])
    _commit(s, torch.arange(len(rows), device=rows.device))
    s.nfe[rows] += 1
    confident, scored = confidences(logits, s.mask_id), None  # of the rows' current states (scored: see _draft_round)
    left = 0  # with a policy: rounds left in the segment, which runs `d` drafts and is timed as a whole
    while True:
        new = s.admit()  # rows that join now get their first forward in this round's call
        if not len(rows) and not len(new):
            break
        if want is not None:
            want = torch.cat([want, torch.full_like(new, k)])
        row_tokens = s.prompt.shape[1] + s.answer.shape[1]  # (a longer prompt joining widens every row)
        d, R = k, len(rows) + len(new)
        if policy is not None:
            if not left:
                left, context, tokens, seconds = policy.rounds, (row_tokens, R), 0, 0.0
                d_segment = policy.choose(row_tokens, R, "round")
            d, started = d_segment, _clock(policy, s.answer)
        if d == 1 or not len(rows):
            (rows, confident, advanced), scored = _static_round(s, rows, confident, new), None
        else:
            budget = None if token_budget is None else max(R, token_budget // row_tokens)
            rows, confident, scored, advanced = _draft_round(s, rows, confident, scored, new, k, d, eager, want,
                                                             budget)
        if policy is not None:
            left, tokens, seconds = left - 1, tokens + advanced, seconds + _clock(policy, s.answer) - started
            if not left or not len(rows):  # (a segment also ends when the batch empties)
                policy.observe(*context, d_segment, tokens, seconds, "round")
                left = 0


def _with_new(s: _State, rows: torch.Tensor, answers: torch.Tensor, new: torch.Tensor) -> tuple:
    """The confidences of one call over `answers` (states of `rows`) and the joining rows' first states."""
    if len(new):
        rows, answers = torch.cat([rows, new]), torch.cat([answers, s.answer[new]])
        s.nfe[new] += 1
    return confidences(_call(s, rows, answers), s.mask_id)


def _static_round(s: _State, rows: torch.Tensor, confident: tuple, new: torch.Tensor
                  ) -> tuple[torch.Tensor, tuple, int]:
    """A static step from the rows' known confidences, then one forward of the rows still going and the joining
    rows `new`: (those rows, their confidences, tokens fixed)."""
    answer = s.answer[rows]
    if len(rows):
        conf, token = scores(confident, answer, s.block, s.mask_id, s.fill_start)
        pos = most_confident(conf)
        s.step[rows] = s.step[rows].scatter(1, pos, s.nfe[rows, None])
        s.answer[rows] = answer.scatter(1, pos, token.gather(1, pos))
        s.stop_after_eos_blocks(rows)
        s.release()
        rows = rows[(s.answer[rows] == s.mask_id).any(dim=1)]
        s.nfe[rows] += 1
    if len(rows) + len(new):
        confident = _with_new(s, rows, s.answer[rows], new)
        rows = torch.cat([rows, new])
        _commit(s, torch.arange(len(rows), device=rows.device))
    else:
        confident = confident[0][:0], confident[1][:0]
    return rows, confident, len(answer)


def _draft_round(s: _State, rows: torch.Tensor, confident: tuple, scored: torch.Tensor | None, new: torch.Tensor,
                 k: int, d: int, eager: bool, want: torch.Tensor | None, rows_allowed: int | None) -> tuple:
    """One FreeDave round: up to d (of k) drafts per row (fewer where `want` says, cut to `rows_allowed` rows fed),
    verified in one forward that also gives the joining rows `new` their first: (the rows still going and the
    joining ones, their confidences (of each going row's last accepted draft), the scores of those confidences
    when the round computed them (the successor check scores every verified draft: the next round's ranking
    starts from them) else None, tokens fixed)."""
    steps = torch.arange(k, device=rows.device)
    answer = s.answer[rows]
    order, available, token = draft_order(confident, answer, s.block, s.mask_id, eager, s.fill_start, scored)
    order = order[:, :k]                                                # (R, k)
    n_drafts = available.clamp(max=d)                                   # m_r
    if want is not None:
        n_drafts = torch.minimum(n_drafts, want[rows])
    if rows_allowed is not None:
        n_drafts = fit_budget(n_drafts, rows_allowed)
    rank = torch.full_like(answer, k).scatter(1, order, steps.expand_as(order))
    drafts = torch.where(rank[:, None, :] <= steps[None, :, None], token[:, None, :], answer[:, None, :])  # (R,k,G)
    # draft j is verified when the row drafts it and it still has a masked token: a row's verified drafts are
    # its first few (each draft fills the tokens of the one before and one more)
    verify = (steps[None, :] < n_drafts[:, None]) & (drafts == s.mask_id).any(dim=2)
    r_idx, j_idx = verify.nonzero(as_tuple=True)
    nfe = s.nfe[rows]
    accepted = torch.ones_like(n_drafts)
    if len(r_idx) or len(new):
        fed = drafts[r_idx, j_idx]
        verified = _with_new(s, rows[r_idx], fed, new)
        # ok[r, j]: draft j+1 exists and equals the static successor of draft j, i.e. the most confident
        # decodable token of draft j is the one draft j+1 adds, with the same token (a row's last draft is
        # verified for its logits alone)
        ok = torch.zeros(len(rows), k, dtype=torch.bool, device=answer.device)
        conf, successor_token = scores((verified[0][:len(r_idx)], verified[1][:len(r_idx)]), fed, s.block,
                                       s.mask_id, s.fill_start)
        pos, added = conf.argmax(dim=1), order[r_idx, (j_idx + 1).clamp(max=k - 1)]  # argmax: first of equals
        ok[r_idx, j_idx] = ((j_idx + 1 < n_drafts[r_idx]) & (pos == added)
                            & (successor_token.gather(1, pos[:, None]).squeeze(1) == token[r_idx, added]))
        accepted = 1 + ok[:, :-1].long().cumprod(dim=1).sum(dim=1)
        if want is not None:
            want[rows] = torch.where(accepted >= n_drafts, 2 * n_drafts, accepted + 1).clamp(1, k)
    counted = nfe + verify.any(dim=1)  # rows with a verified draft took part in that forward
    s.nfe[rows] = counted
    # draft 1's token was fixed by the forward before; the other accepted drafts' tokens by this one
    s.step[rows] = torch.where(rank == 0, nfe[:, None],
                               torch.where(rank < accepted[:, None], counted[:, None], s.step[rows]))
    s.answer[rows] = drafts[torch.arange(len(rows), device=rows.device), accepted - 1]
    s.stop_after_eos_blocks(rows)
    s.release()
    going = (s.answer[rows] == s.mask_id).any(dim=1)  # a going row's last accepted draft was verified
    v = verify.sum(dim=1)
    kept = (v.cumsum(dim=0) - v + accepted - 1)[going]
    if len(new):  # joining rows come last in the call
        kept = torch.cat([kept, torch.arange(len(new), device=rows.device) + len(r_idx)])
    if not len(kept):
        return rows[:0], (confident[0][:0], confident[1][:0]), None, int(accepted.sum())
    _commit(s, kept)
    scored = None if len(new) else conf[kept]  # a going row's state is its verified draft: already scored
    return torch.cat([rows[going], new]), (verified[0][kept], verified[1][kept]), scored, int(accepted.sum())


def _clock(policy: CostAwareDrafts, like: torch.Tensor) -> float:
    """The policy's clock once the device is idle (a GPU's queued kernels are waited for: calls are timed, not
    launched)."""
    if like.is_cuda:
        torch.cuda.synchronize(like.device)
    return policy.clock()


def _call(s: _State, rows: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """One forward pass over `answers`, each the answer of sequence `rows[i]` (drafts share their sequence)."""
    return s.forward(torch.cat([s.prompt[rows], answers], dim=1), rows)


def _commit(s: _State, index: torch.Tensor) -> None:
    """Rows `index` of the last forward became their sequences' states (a prefix cache keeps their finished
    blocks; the plain forward has nothing to keep)."""
    if hasattr(s.forward, "commit"):
        s.forward.commit(index)
