"""The `torch` rollout backend: raylab's own KV-cached sampler over a Hugging Face Llama-family model's weights.

    rollout = TorchRollout("assets/tiny_policy", seed=0)
    completions = rollout.generate(["12+7="], SamplingConfig(num_generations=8, max_new_tokens=8), seed=1)

Why: for small policies, `generate` spends most of its time outside the matrix products (per-step cache
concatenation, mask building, logits processors, seven projections per layer). This decoder does what an
inference engine does, in plain torch: the q/k/v and gate/up projections are fused into one matrix each, the
KV cache is preallocated and written in place, each prompt is prefilled once and its cache copied to its K
samples, and decoding stops when every row has ended. Norms, rotary embeddings and the output head are the
model's own modules, so the distribution sampled is the model's: the recorded log-probs equal the learner's
(tested to 1e-5).

Supported: decoder layers shaped like Llama's (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj with SiLU;
Llama, Qwen2, Mistral). Anything else is a one-line error that points to the `hf` backend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raylab.grpo.policy import load_policy, load_tokenizer
from raylab.grpo.rollout.common import Completion, SamplingConfig
from raylab.grpo.rollout.hf import completion_records, load_packed, score_completion

SUPPORTED = ("llama", "qwen2", "mistral")


class TorchRollout:
    """The Hugging Face model's own weights and modules, driven by the lean decoder below; loading, weight
    format, completion records and `score` are the functions the `hf` backend uses too."""

    def __init__(self, model, seed: int = 0, dtype: str = "float32", device: str = "cpu", tokenizer=None):
        """`model`: a path or hub id, or an already built causal LM (then pass its `tokenizer` too)."""
        if isinstance(model, str):
            tokenizer, model = load_tokenizer(model), load_policy(model, dtype=getattr(torch, dtype))
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        kind = self.model.config.model_type
        if kind not in SUPPORTED or getattr(self.model.config, "hidden_act", "silu") != "silu":
            raise ValueError(f"rollout backend 'torch' supports {SUPPORTED} with SiLU MLPs, not {kind!r}: "
                             "use rollout.backend=hf")
        self.seed = seed
        cfg = self.model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self._fuse()

    def _fuse(self) -> None:
        """One matrix (and bias) for q|k|v and one for gate|up per layer; redone after every weight load."""
        self.fused = []
        for layer in self.model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv = [att.q_proj, att.k_proj, att.v_proj]
            bias = None if qkv[0].bias is None else torch.cat([p.bias for p in qkv])
            self.fused.append((torch.cat([p.weight for p in qkv]), bias,
                               torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])))

    def load_weights(self, packed: dict) -> None:
        load_packed(self.model, packed)
        self._fuse()

    def score(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        return score_completion(self.model, self.tokenizer, prompt_ids, completion_ids, temperature)

    # --- the decoder -------------------------------------------------------------------------------------------
    def _forward(self, ids, positions, key_mask, cache, start: int) -> torch.Tensor:
        """Hidden states of `ids` [B, S] at cache slots start..start+S-1; key_mask [B, start+S] marks real keys."""
        m = self.model.model
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        h = m.embed_tokens(ids)
        cos, sin = m.rotary_emb(h, positions)
        cos, sin = cos[:, None], sin[:, None]
        B, S = ids.shape
        end = start + S
        # queries see real keys at or before their own slot, and always their own slot: a padding query with
        # no real key would otherwise get NaN, which would then leak through the cache into the real rows
        slots, query_slots = torch.arange(end, device=ids.device), start + torch.arange(S, device=ids.device)[:, None]
        mask = (slots <= query_slots) & key_mask[:, None, None, :end] | (slots == query_slots)
        for layer, (w_qkv, b_qkv, w_gate_up), (k_cache, v_cache) in zip(m.layers, self.fused, cache):
            att = layer.self_attn
            x = layer.input_layernorm(h)
            qkv = F.linear(x, w_qkv, b_qkv)
            q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
            q = q.view(B, S, heads, head_dim).transpose(1, 2)
            k = k.view(B, S, kv_heads, head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v.view(B, S, kv_heads, head_dim).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=mask,
                                               scale=att.scaling, enable_gqa=heads != kv_heads)
            h = h + att.o_proj(o.transpose(1, 2).reshape(B, S, heads * head_dim))
            gate, up = F.linear(layer.post_attention_layernorm(h), w_gate_up).chunk(2, dim=-1)
            h = h + layer.mlp.down_proj(F.silu(gate) * up)
        return m.norm(h)

    def _new_cache(self, batch: int, length: int):
        shape, dtype = (batch, self.kv_heads, length, self.head_dim), self.model.dtype
        new = lambda: torch.zeros(shape, dtype=dtype, device=self.device)  # noqa: E731
        return [(new(), new()) for _ in self.model.model.layers]  # (keys, values) per layer

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[Completion]:
        """K = sampling.num_generations completions for each prompt, prompt by prompt in order."""
        k, n_new = sampling.num_generations, sampling.max_new_tokens
        prompt_ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        width = max(map(len, prompt_ids))
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        # left padding: every prompt's last token sits in the same slot, so one decode step serves all rows
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.device)
        real = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        positions = (real.cumsum(1) - 1).clamp(min=0)
        key_mask = torch.cat([real, torch.ones(len(prompts), n_new, dtype=real.dtype, device=self.device)], 1).bool()
        cache = self._new_cache(len(prompts), width + n_new)
        h = self._forward(ids, positions, key_mask, cache, 0)[:, -1]
        # each prompt was prefilled once; its K samples start from copies of its cache
        cache = [(kc.repeat_interleave(k, 0), vc.repeat_interleave(k, 0)) for kc, vc in cache]
        h, key_mask = h.repeat_interleave(k, 0), key_mask.repeat_interleave(k, 0)
        position = positions[:, -1].repeat_interleave(k, 0)
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + seed)
        tokens, logps = [], []
        done = torch.zeros(len(h), dtype=torch.bool, device=self.device)
        for step in range(n_new):
            logits = self.model.lm_head(h).float()
            token, logp = _sample(logits, sampling, gen)
            token = torch.where(done, torch.full_like(token, pad), token)
            tokens.append(token)
            logps.append(logp)
            done |= token == eos
            if done.all() or step == n_new - 1:
                break
            position = position + 1
            h = self._forward(token[:, None], position[:, None], key_mask, cache, width + step)[:, -1]
        return completion_records(self.tokenizer, prompt_ids, torch.stack(tokens, 1).tolist(),
                                  torch.stack(logps, 1).cpu(), k)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _sample(logits: torch.Tensor, sampling: SamplingConfig, gen: torch.Generator):
    """A token per row from softmax(logits / T) restricted to the top-p nucleus (greedy at T = 0), and its
    log-prob under that (renormalised) distribution, as the hf backend records it."""
    if sampling.temperature <= 0:
        logp = torch.log_softmax(logits, -1)
        token = logits.argmax(-1)
        return token, logp.gather(-1, token[:, None]).squeeze(-1)
    logits = logits / sampling.temperature
    if sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        tail = sorted_logits.softmax(-1).cumsum(-1) > sampling.top_p
        tail[:, 1:] = tail[:, :-1].clone()  # keep the token that crosses p
        tail[:, 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(tail, float("-inf")))
    logp = torch.log_softmax(logits, -1)
    token = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)
