"""An exact prefix KV cache for block-causal decoding (SDAR/TraDo style). Pure torch.

    generate(model, prompt_ids, attention="block_causal", use_cache=True, ...)

With block-causal attention a token sees only its own and earlier blocks, so the keys and values of the prompt
(block 0) and of every finished answer block never change: they are computed once and kept. Each forward then
feeds, per row, only the tokens from the end of its sequence's cache to the end of the row's current block (the
current block, plus a just-finished block whose keys and values are not yet kept). Rows of one call may belong
to sequences at different blocks: caches are padded to the longest and padding is masked out.

A finished block's keys and values are kept from the forward that fed it as part of a sequence's actual state
(`commit`): in static decoding every forwarded row is a state; in FreeDave only the accepted draft is. The
prompt is encoded once up front (`prefill_calls`, not counted as a decoding step).

Model protocol: `model.forward_cached(input_ids (N, S), positions (N, S), attention_mask (N, S, C + S) bool,
past)` -> (logits (N, S, V), per layer (k, v) of the S tokens, each (N, heads, S, head_dim)), where `past` is a
list per layer of (k, v) of shape (N, heads, C, head_dim). `raylab.diffusion.model.TinyMDLM` implements it.
"""
from __future__ import annotations

import torch


class CachedForward:
    """Drop-in for `decoding.Forward` (same call signature and output) that keeps a per-sequence prefix cache."""

    def __init__(self, model, prompt_ids: torch.Tensor, gen_length: int, block_length: int, mask_token_id: int):
        if not hasattr(model, "forward_cached"):
            raise ValueError("use_cache: the model has no forward_cached method (see raylab.diffusion.cache)")
        self.model, self.L, self.mask_id = model, block_length, mask_token_id
        B, self.P = prompt_ids.shape
        self.T = self.P + gen_length
        pos = torch.arange(self.T, device=prompt_ids.device)
        self.block = torch.where(pos < self.P, 0, (pos - self.P) // block_length + 1)  # block id of each position
        self.calls, self.prefill_calls = 0, 1
        visible = torch.ones(B, self.P, self.P, dtype=torch.bool, device=prompt_ids.device)
        _, kv = model.forward_cached(prompt_ids, pos[: self.P].expand(B, -1), visible, None)
        self.keys = [torch.zeros(*k.shape[:2], self.T, k.shape[3], dtype=k.dtype, device=k.device) for k, _ in kv]
        self.values = [torch.zeros_like(k) for k in self.keys]
        for layer, (k, v) in enumerate(kv):
            self.keys[layer][:, :, : self.P], self.values[layer][:, :, : self.P] = k, v
        self.cached = torch.full((B,), self.P, dtype=torch.long, device=prompt_ids.device)
        self.last = None

    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Aligned answer logits (N, G, V); only each row's fed positions (its current block) are filled."""
        self.calls += 1
        N, dev = x.shape[0], x.device
        start = self.cached[rows]                                                    # (N,)
        masked = x[:, self.P:] == self.mask_id
        first = torch.where(masked, torch.arange(self.T - self.P, device=dev), self.T).min(dim=1).values
        end = self.P + (first // self.L + 1) * self.L                                # end of the current block
        S, C = int((end - start).max()), int(start.max())
        pos = start[:, None] + torch.arange(S, device=dev)                           # (N, S)
        valid = pos < end[:, None]
        pos = pos.clamp(max=self.T - 1)
        ids = x.gather(1, pos)
        q_blk, k_blk = self.block[pos], self.block[pos]
        own = valid[:, None, :] & (k_blk[:, None, :] <= q_blk[:, :, None])
        own |= torch.eye(S, dtype=torch.bool, device=dev)  # a padding query attends to itself (no empty row)
        cached = (torch.arange(C, device=dev)[None, :] < start[:, None])[:, None, :].expand(N, S, C)
        past = [(k[rows, :, :C], v[rows, :, :C]) for k, v in zip(self.keys, self.values)]
        logits, kv = self.model.forward_cached(ids, pos, torch.cat([cached, own], dim=2), past)
        self.last = rows, start, pos, valid, first, kv
        out = logits.new_zeros(N, self.T - self.P, logits.shape[-1])
        n_idx, s_idx = (valid & (pos >= self.P)).nonzero(as_tuple=True)
        out[n_idx, pos[n_idx, s_idx] - self.P] = logits[n_idx, s_idx]
        return out

    def commit(self, index: torch.Tensor) -> None:
        """Rows `index` of the last call are now their sequences' states: keep their finished fed blocks."""
        rows, start, pos, valid, first, kv = self.last
        done = self.P + (first // self.L) * self.L  # start of the current block: everything before is final
        for i in index.tolist():
            b, n = int(rows[i]), int(done[i] - start[i])
            if n <= 0:
                continue
            for layer, (k, v) in enumerate(kv):
                self.keys[layer][b, :, start[i]:done[i]] = k[i, :, :n]
                self.values[layer][b, :, start[i]:done[i]] = v[i, :, :n]
            self.cached[b] = done[i]
