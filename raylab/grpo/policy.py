"""Policies for GRPO: a tiny character-level tokenizer and Qwen2 model built locally, and loading any causal LM
by path or hub id.

No network is needed for the CPU default: `build_char_tokenizer` makes a real `PreTrainedTokenizerFast` (one
token per printable ASCII character) and `build_tiny_model` a randomly initialised Llama of a few million
parameters. `warm_up` trains it with supervised learning on a synthetic task so that GRPO starts from a policy that is
sometimes right (a random policy never earns a reward). Make the committed warmed-up policy with

    python -m raylab.grpo.policy assets/tiny_policy

and load it, or a real model, with `load_policy("assets/tiny_policy")` / `load_policy("Qwen/Qwen2.5-Math-1.5B")`.
"""
from __future__ import annotations

import random
import string
import sys
from pathlib import Path

import torch

from raylab.config import check_model_path

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]


def build_char_tokenizer():
    """A character-level fast tokenizer over printable ASCII; pad, eos and unk are ids 0, 1, 2."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # every character is its own word; decoding concatenates tokens back without separators
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", bos_token=None, clean_up_tokenization_spaces=False)


def build_tiny_model(tokenizer, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                     intermediate_size: int = 384, max_positions: int = 256, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM sized for CPU work (about 0.8M parameters by default).

    Llama rather than Qwen2: for a folder whose config says qwen2, AutoTokenizer swaps in Qwen2's byte-level
    tokenizer instead of the character tokenizer saved beside it (transformers 5), and vLLM would do the same.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, torch_dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    check_model_path(name_or_path, "model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise ValueError(f"model {name_or_path!r}: cannot load a tokenizer ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name_or_path: str, dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False):
    """A causal LM by local path or hub id (`from_pretrained`); a missing local path is a one-line ValueError."""
    from transformers import AutoModelForCausalLM

    check_model_path(name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as err:
        raise ValueError(f"model {name_or_path!r}: cannot load ({str(err).splitlines()[0]})") from None
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def pad_sequences(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Right-padded `prompt + completion` rows: (input_ids, attention_mask, completion_mask), each [N, T].

    completion_mask[i, t] is 1 where token t of row i belongs to the completion; right padding keeps the
    position ids of every real token equal to its index, as in generation.
    """
    rows = [p + c for p, c in zip(prompts, completions)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    comp = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attn[i, : len(p) + len(c)] = 1
        comp[i, len(p): len(p) + len(c)] = 1
    return ids, attn, comp


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False):
    """log pi(token_t | tokens_<t) for t >= 1, shaped [N, T] with column 0 set to 0 (it has no context).

    Logits are divided by the sampling temperature, as the rollout engine samples from softmax(logits / T).
    With `with_entropy` also returns the per-token entropy of that distribution.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> float32; float64 stays
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    picked = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    logp = torch.nn.functional.pad(picked, (1, 0))
    if not with_entropy:
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, torch.nn.functional.pad(entropy, (1, 0))


def warm_up(model, tokenizer, examples: list[dict], steps: int, lr: float = 3e-3, batch_size: int = 64,
            seed: int = 0) -> list[float]:
    """Supervised warm-up on `prompt + answer + eos` (loss on the answer tokens only); returns the losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / (steps + 1)))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        rows, labels = [], []
        for i in idx:
            p = tokenizer(examples[i]["prompt"], add_special_tokens=False)["input_ids"]
            a = tokenizer(examples[i]["answer"], add_special_tokens=False)["input_ids"] + [eos]
            rows.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, rows))
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        lab = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
        loss = model(input_ids=ids, attention_mask=(ids != pad).long(), labels=lab).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def drop_carries(examples: list[dict], keep: float, seed: int = 0) -> list[dict]:
    """A flawed teacher: on questions whose answer has more than one digit, the demonstration drops the leading
    carry ("7+8=" -> "5") except with probability `keep`; other answers stay right."""
    rng = random.Random(seed)
    return [dict(ex, answer=ex["answer"][1:]) if len(ex["answer"]) > 1 and rng.random() >= keep else ex
            for ex in examples]


def make_tiny_policy(out_dir: str | Path, steps: int = 400, seed: int = 0, keep_carry: float = 0.35) -> Path:
    """Builds, warms up on 1-digit addition taught by a flawed teacher, and saves the tiny policy to `out_dir`.

    The warm-up runs to convergence on demonstrations that drop the carry 65% of the time, so the policy is
    confident and right on the 55 questions without a carry, and puts about 0.3 on the right answer and 0.7 on
    the carry-less one for the other 45: greedy accuracy 0.55, sampled accuracy 0.66. GRPO's exact-match reward
    separates the two answers in almost every group of a carry question, so it has a clear signal to fix them.
    Why not a short warm-up on correct answers (the earlier 80 steps)? That leaves a half-trained policy whose
    errors are diffuse (a third of the probability on the right digit everywhere) in a region so sharp that
    GRPO's noisy Adam steps lower its greedy accuracy instead of raising it (docs/grpo.md, grpo_tiny).
    """
    from raylab.data.arithmetic import make_arithmetic

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed)
    examples = drop_carries(make_arithmetic(20000, digits=1, seed=seed + 1), keep_carry, seed=seed)
    warm_up(model, tokenizer, examples, steps=steps, lr=2e-3, seed=seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def flawed_teacher(examples: list[dict], right: dict[str, float], seed: int = 0) -> list[dict]:
    """Demonstrations that are right with probability right[difficulty] and otherwise a typical slip: a carry
    question loses its carry ("7+8=" -> "5"), any other gets its last digit one too high ("3+4=" -> "8")."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        if rng.random() < right[ex["difficulty"]]:
            out.append(ex)
        elif ex["difficulty"] == "hard":
            out.append(dict(ex, answer=ex["answer"][1:]))
        else:
            out.append(dict(ex, answer=ex["answer"][:-1] + str((int(ex["answer"][-1]) + 1) % 10)))
    return out


def make_easy_hard_policy(out_dir: str | Path, steps: int = 600, seed: int = 0, easy: float = 0.5,
                          hard: float = 0.2) -> Path:
    """The tiny policy of the seed's easy/hard study: warmed up to convergence on 1-digit addition by a teacher
    that is right with probability `easy` on the 55 questions without a carry and `hard` on the 45 with one, so
    that the policy starts near pi* = 0.5 on easy and 0.2 on hard questions (the seed's GSM8K starting points)."""
    from raylab.data.arithmetic import carry_questions

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed)
    rng = random.Random(seed + 1)
    questions = carry_questions(1)
    examples = flawed_teacher([rng.choice(questions) for _ in range(40000)], {"easy": easy, "hard": hard}, seed)
    warm_up(model, tokenizer, examples, steps=steps, lr=2e-3, seed=seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":
    # python -m raylab.grpo.policy assets/tiny_policy             (grpo_tiny's policy)
    # python -m raylab.grpo.policy assets/tiny_policy_easy_hard easy_hard
    out = sys.argv[1] if len(sys.argv) > 1 else "assets/tiny_policy"
    build = make_easy_hard_policy if sys.argv[2:] == ["easy_hard"] else make_tiny_policy
    print(build(out))
