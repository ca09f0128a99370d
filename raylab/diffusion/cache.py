"""An exact prefix KV cache for block-causal decoding (SDAR/TraDo style). Pure torch.

    generate(model, prompt_ids, attention="block_causal", use_cache=True, ...)

With block-causal attention a token sees only its own and earlier blocks, so the keys and values of the prompt's
complete blocks and of every finished answer block never change: they are computed once and kept. (With the
answer layout the whole prompt is block 0; with the absolute layout the prompt's last, partial block is finished
by the answer, so its prompt tokens are fed with the answer's first block, as SDAR's own decoding does.) Each
forward then feeds, per row, only the tokens from the end of its sequence's cache to the end of the row's
current block (the current block, plus a just-finished block whose keys and values are not yet kept; with eager
drafting also the later blocks, whose logits rank the drafts that cross a block boundary). Rows of one call may
belong to sequences at different blocks: caches are padded to the longest and padding is masked out.

A finished block's keys and values are kept from the forward that fed it as part of a sequence's actual state
(`commit`): in static decoding every forwarded row is a state; in FreeDave only the accepted draft is; no
separate KV-store pass is made. The prompt's complete blocks are encoded once up front (`prefill_passes`: 1, or
0 when the prompt holds no complete block), reported in `DecodeResult.model_calls`, not in `nfe`.

Verification of k drafts shares its sequence's cached prefix: the cache is handed over once per sequence with
`owner` (row i belongs to sequence owner[i]), and `shared_prefix_attention` computes every draft's attention to
that prefix from the one copy (the queries of a sequence's drafts are grouped against it), then merges it with
each draft's own keys in one softmax. No key or value of the prefix is copied per draft.

Model protocol: `model.forward_cached(input_ids (N, S), positions (N, S), attention_mask (N, S, C + S) bool,
past, owner=None)` -> (logits (N, S, V), per layer (k, v) of the S tokens, each (N, heads, S, head_dim)), where
`past` is a list per layer of (k, v) of shape (N, heads, C, head_dim), or with `owner` (N,) of shape
(B, heads, C, head_dim), one per sequence. `TinyMDLM` and the native models implement it.
"""
from __future__ import annotations

import torch

from raylab.diffusion.blocks import position_blocks


class CachedForward:
    """Drop-in for `decoding.Forward` (same call signature and output) that keeps a per-sequence prefix cache."""

    def __init__(self, model, prompt_ids: torch.Tensor, gen_length: int, block_length: int, mask_token_id: int,
                 layout: str = "answer", feed_to_end: bool = False):
        if not hasattr(model, "forward_cached"):
            raise ValueError("use_cache: the model has no forward_cached method (see raylab.diffusion.cache)")
        self.model, self.L, self.mask_id = model, block_length, mask_token_id
        B, self.P = prompt_ids.shape
        self.T = self.P + gen_length
        dev = prompt_ids.device
        pos = torch.arange(self.T, device=dev)
        self.block = position_blocks(self.P, gen_length, block_length, layout, dev)  # block id of each position
        self.absolute, self.feed_to_end = layout == "absolute", feed_to_end
        kept = (self.P // block_length) * block_length if self.absolute else self.P  # complete prompt blocks
        self.calls, self.prefill_passes = 0, int(kept > 0)
        self.keys = self.values = None
        if kept:
            visible = (self.block[None, :kept] <= self.block[:kept, None]).expand(B, -1, -1)
            _, kv = model.forward_cached(prompt_ids[:, :kept], pos[:kept].expand(B, -1), visible, None)
            self._allocate(kv, B)
            for layer, (k, v) in enumerate(kv):
                self.keys[layer][:, :, :kept], self.values[layer][:, :, :kept] = k, v
        self.cached = torch.full((B,), kept, dtype=torch.long, device=dev)
        self.last = None

    def _allocate(self, kv, batch: int) -> None:
        self.keys = [torch.zeros(batch, k.shape[1], self.T, k.shape[3], dtype=k.dtype, device=k.device)
                     for k, _ in kv]
        self.values = [torch.zeros_like(k) for k in self.keys]

    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Aligned answer logits (N, G, V); only each row's fed positions (its current block) are filled."""
        self.calls += 1
        N, dev = x.shape[0], x.device
        start = self.cached[rows]                                                    # (N,)
        masked = x[:, self.P:] == self.mask_id
        first = torch.where(masked, torch.arange(self.T - self.P, device=dev), self.T).min(dim=1).values
        end = self._block_end(first)                                                 # end of the current block
        if self.feed_to_end:  # eager drafting ranks the later blocks' tokens too: they need their logits
            end = torch.full_like(end, self.T)
        S, C = int((end - start).max()), int(start.max())
        pos = start[:, None] + torch.arange(S, device=dev)                           # (N, S)
        valid = pos < end[:, None]
        pos = pos.clamp(max=self.T - 1)
        ids = x.gather(1, pos)
        q_blk, k_blk = self.block[pos], self.block[pos]
        own = valid[:, None, :] & (k_blk[:, None, :] <= q_blk[:, :, None])
        own |= torch.eye(S, dtype=torch.bool, device=dev)  # a padding query attends to itself (no empty row)
        cached = (torch.arange(C, device=dev)[None, :] < start[:, None])[:, None, :].expand(N, S, C)
        past = None if self.keys is None else [(k[:, :, :C], v[:, :, :C]) for k, v in zip(self.keys, self.values)]
        logits, kv = self.model.forward_cached(ids, pos, torch.cat([cached, own], dim=2), past,
                                               owner=None if past is None else rows)
        if self.keys is None:
            self._allocate(kv, len(self.cached))
        self.last = rows, start, pos, valid, first, kv
        out = logits.new_zeros(N, self.T - self.P, logits.shape[-1])
        n_idx, s_idx = (valid & (pos >= self.P)).nonzero(as_tuple=True)
        out[n_idx, pos[n_idx, s_idx] - self.P] = logits[n_idx, s_idx]
        return out

    def commit(self, index: torch.Tensor) -> None:
        """Rows `index` of the last call are now their sequences' states: keep their finished fed blocks."""
        rows, start, pos, valid, first, kv = self.last
        done = self._block_end(first) - self.L  # start of the current block: everything before is final
        for i in index.tolist():
            b, n = int(rows[i]), int(done[i] - start[i])
            if n <= 0:
                continue
            for layer, (k, v) in enumerate(kv):
                self.keys[layer][b, :, start[i]:done[i]] = k[i, :, :n]
                self.values[layer][b, :, start[i]:done[i]] = v[i, :, :n]
            self.cached[b] = done[i]

    def _block_end(self, first: torch.Tensor) -> torch.Tensor:
        """End (exclusive position) of the block holding answer position `first`."""
        if self.absolute:
            return ((self.P + first) // self.L + 1) * self.L
        return self.P + (first // self.L + 1) * self.L


def shared_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                            past_k: torch.Tensor, past_v: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Softmax attention of rows q (N, H, S, D) over [their sequence's prefix, their own k/v (N, Hkv, S, D)],
    the prefix given once per sequence (past_k/past_v (B, Hkv, C, D), row i's is owner[i]); mask (N, S, C + S)
    bool. Equals attention over per-row copies of the prefix (to rounding). H must be a multiple of Hkv."""
    N, H, S, D = q.shape
    B, Hkv, C, _ = past_k.shape
    g = H // Hkv
    scale = D ** -0.5
    # rows of one sequence side by side: slot[i] is row i's place among its sequence's rows
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=B)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(owner)
    slot[order] = torch.arange(N, device=owner.device) - first[owner[order]]
    m = int(counts.max())
    grouped = q.new_zeros(B, m, H, S, D)
    grouped[owner, slot] = q
    grouped = grouped.view(B, m, Hkv, g, S, D).permute(0, 2, 1, 3, 4, 5).reshape(B, Hkv, m * g * S, D)
    prefix = (grouped @ past_k.transpose(-1, -2)) * scale                     # (B, Hkv, m*g*S, C)
    prefix = prefix.view(B, Hkv, m, g, S, C).permute(0, 2, 1, 3, 4, 5).reshape(B, m, H, S, C)[owner, slot]
    k_own = k.repeat_interleave(g, dim=1) if g > 1 else k
    v_own = v.repeat_interleave(g, dim=1) if g > 1 else v
    own = (q @ k_own.transpose(-1, -2)) * scale                               # (N, H, S, S)
    scores = torch.cat([prefix, own], dim=-1).masked_fill(~mask[:, None], -torch.inf)
    p = torch.softmax(scores, dim=-1)
    p_prefix = p[..., :C].new_zeros(B, m, H, S, C)
    p_prefix[owner, slot] = p[..., :C]
    p_prefix = p_prefix.view(B, m, Hkv, g, S, C).permute(0, 2, 1, 3, 4, 5).reshape(B, Hkv, m * g * S, C)
    out = (p_prefix @ past_v).view(B, Hkv, m, g, S, D).permute(0, 2, 1, 3, 4, 5).reshape(B, m, H, S, D)
    return out[owner, slot] + p[..., C:] @ v_own


class DualCacheForward:
    """An approximate dual cache for bidirectional models (Fast-dLLM's idea); drop-in for `decoding.Forward`.

    When a sequence enters a new block, one full forward gives the logits of its state and the keys and values of
    every position; until the block is finished, each forward feeds only the block's tokens (one more in front
    with shifted logits), attending to those kept keys for the prefix and the suffix. The prefix's and suffix's
    keys are then stale (they were computed when the block held more masks), so the output can differ from
    static decoding's: lossy, and reported with its measured agreement. A call in which any row enters a new block
    is a full forward for all its rows. The cache is refreshed from a sequence's actual states only (`commit`)."""

    def __init__(self, model, prompt_ids: torch.Tensor, gen_length: int, block_length: int, mask_token_id: int,
                 shifted_logits: bool):
        if not hasattr(model, "forward_cached"):
            raise ValueError("dual_cache: the model has no forward_cached method (see raylab.diffusion.cache)")
        self.model, self.L, self.mask_id, self.shift = model, block_length, mask_token_id, int(shifted_logits)
        B, self.P = prompt_ids.shape
        self.G, self.T = gen_length, self.P + gen_length
        self.keys = self.values = None
        self.block_of = torch.full((B,), -1, dtype=torch.long, device=prompt_ids.device)
        self.calls, self.prefill_passes, self.last = 0, 0, None

    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        N, dev = x.shape[0], x.device
        masked = x[:, self.P:] == self.mask_id
        first = torch.where(masked, torch.arange(self.G, device=dev), self.G).min(dim=1).values
        blk = first // self.L
        if self.keys is None or (self.block_of[rows] != blk).any():
            logits, kv = self.model.forward_cached(x, torch.arange(self.T, device=dev).expand(N, -1), None, None)
            self.last = rows, blk, kv
            start = self.P - self.shift
            return logits[:, start:start + self.G]
        self.last = None
        lo = self.P + blk * self.L - self.shift                                    # (N,) first fed position
        S = self.L + self.shift
        pos = lo[:, None] + torch.arange(S, device=dev)                            # (N, S)
        t = torch.arange(self.T, device=dev)[None]
        stale_self = (t >= lo[:, None] + self.shift) & (t < lo[:, None] + S)        # the block's own old keys
        mask = torch.cat([(~stale_self)[:, None].expand(N, S, self.T),
                          torch.ones(N, S, S, dtype=torch.bool, device=dev)], dim=2)
        if self.shift:  # the fed token in front of the block is fed anew: hide its cached copy too
            mask[:, :, :self.T] &= (t != lo[:, None])[:, None]
        past = list(zip(self.keys, self.values))
        logits, _ = self.model.forward_cached(x.gather(1, pos), pos, mask, past, owner=rows)
        out = logits.new_zeros(N, self.G, logits.shape[-1])
        answer_pos = pos + self.shift - self.P                                     # the answer index each predicts
        n_idx, s_idx = ((answer_pos >= 0) & (answer_pos < self.G)).nonzero(as_tuple=True)
        out[n_idx, answer_pos[n_idx, s_idx]] = logits[n_idx, s_idx]
        return out

    def commit(self, index: torch.Tensor) -> None:
        """Rows `index` of the last call are their sequences' states: a full forward's keys become the cache."""
        if self.last is None:
            return
        rows, blk, kv = self.last
        if self.keys is None:
            self.keys = [torch.zeros(len(self.block_of), *k.shape[1:], dtype=k.dtype, device=k.device)
                         for k, _ in kv]
            self.values = [torch.zeros_like(k) for k in self.keys]
        b = rows[index]
        for layer, (k, v) in enumerate(kv):
            self.keys[layer][b], self.values[layer][b] = k[index], v[index]
        self.block_of[b] = blk[index]

