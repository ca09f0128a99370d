"""FreeDave's measurements, defined once: used by `raylab bench freedave` and the freedave_eval experiment.

    m = decode_metrics(sequences, nfe, seconds, prompt_length, static_sequences=..., correct=...)
    m["tokens_per_nfe"], m["tokens_per_s"], m["exact_match"], m["accuracy"]
    ratios = versus_static(rows)      # {method: {"tokens_per_nfe": x, "tokens_per_s": y}} relative to static

- tokens_per_nfe: answer tokens over decoding forwards, summed over sequences (the paper's throughput over NFEs).
- tokens_per_s: answer tokens over the wall-clock seconds of the pass that produced them.
- exact_match: fraction of sequences equal to static decoding's, token for token.
- accuracy: fraction of sequences judged correct (`correct`, a bool per sequence), when given.
- model_calls_per_token: every model pass (also prefills) per answer token, when `model_calls` is given.
"""
from __future__ import annotations

import torch


def decode_metrics(sequences: torch.Tensor, nfe: torch.Tensor, seconds: float, prompt_length: int, *,
                   static_sequences: torch.Tensor | None = None, correct: torch.Tensor | None = None,
                   model_calls: torch.Tensor | None = None, tokens: int | None = None) -> dict:
    """`tokens`: answer tokens in all, when answers differ in length (default: from the shapes)."""
    tokens = tokens or (sequences.shape[1] - prompt_length) * sequences.shape[0]
    out = {"tokens_per_nfe": tokens / float(nfe.sum()), "tokens_per_s": tokens / seconds}
    if static_sequences is not None:
        out["exact_match"] = float((sequences.cpu() == static_sequences.cpu()).all(dim=1).double().mean())
    if correct is not None:
        out["accuracy"] = float(torch.as_tensor(correct, dtype=torch.float64).mean())
    if model_calls is not None:
        out["model_calls_per_token"] = float(model_calls.sum()) / tokens
    return out


def versus_static(rows: dict[str, dict]) -> dict[str, dict]:
    """Each method's throughputs as multiples of static's (rows must hold "static")."""
    base = rows["static"]
    return {m: {key: r[key] / base[key] for key in ("tokens_per_nfe", "tokens_per_s")} for m, r in rows.items()}
