"""Experiment `freedave_eval`: static, parallel and FreeDave decoding of the tiny MDLM on held-out problems of
the task it was trained on.

    raylab run experiments/freedave_eval.yaml
    raylab run experiments/freedave_eval.yaml draft_steps=4 block_length=4
    raylab tune experiments/freedave_eval.yaml          # the sweep over draft_steps and block_length

Every problem is one request to a pool of decoder actors (`raylab.diffusion.actors`), which batch requests as
they arrive. Reports, per method: accuracy (whole answer right), tokens/s (answer tokens over the wall-clock time
of the method's pass through the pool), tokens per NFE, and the exact-match rate against static decoding.
Writes `table.md` (the seed's table layout: differences and ratios against static) and `nfe_per_sample.png`.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from raylab.config import RunConfig
from raylab.diffusion.actors import DecoderPool
from raylab.diffusion.model import TinyMDLM
from raylab.diffusion.tasks import MASK, load_task
from raylab.results import atomic_write, plot_lines

METHODS = ("static", "parallel", "freedave")
LABELS = {"static": "Static", "parallel": "Parallel", "freedave": "FreeDave"}


class Config(RunConfig):
    experiment: Literal["freedave_eval"] = "freedave_eval"
    checkpoint: str = Field("assets/tiny_mdlm", description="a TinyMDLM directory (config.json, model.safetensors)")
    samples: int = Field(200, ge=1)
    block_length: int = Field(12, ge=1)
    draft_steps: int = Field(8, ge=1)
    threshold: float = Field(0.9, gt=0, le=1, description="parallel decoding's confidence threshold")
    num_actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    max_batch: int = Field(1, ge=1, description="largest batch an actor forms from waiting requests (1: one "
                                                "sequence at a time, the paper's setting)")

    @field_validator("checkpoint")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return str(Path(path).expanduser().resolve())  # Tune trials run in their own working directory


def evaluate(pool: DecoderPool, prompts: torch.Tensor, method: str) -> tuple[list[dict], float]:
    start = time.perf_counter()
    results = pool.decode(prompts, method=method)
    return results, time.perf_counter() - start


def table(rows: dict[str, dict], model: str) -> str:
    """The seed's layout: each method's value, with its difference (accuracy) or ratio (throughput) to static."""
    base = rows["static"]
    lines = ["| Model | Sampling | Acc (%) | Throughput over time (#tokens/s) | Throughput over NFEs (#tokens) "
             "| Exact match vs static (%) |", "|---|---|---|---|---|---|"]
    for i, (method, r) in enumerate(rows.items()):
        acc, tps, tpn = 100 * r["accuracy"], r["tokens_per_s"], r["tokens_per_nfe"]
        if method == "static":
            cells = [f"{acc:.2f}", f"{tps:.1f}", f"{tpn:.2f}"]
        else:
            cells = [f"{acc:.2f} ({acc - 100 * base['accuracy']:+.2f})", f"{tps:.1f} ({tps / base['tokens_per_s']:.2f}x)",
                     f"{tpn:.2f} ({tpn / base['tokens_per_nfe']:.2f}x)"]
        lines.append(f"| {model if i == 0 else ''} | {LABELS[method]} | " + " | ".join(cells) +
                     f" | {100 * r['exact_match']:.1f} |")
    return "\n".join(lines) + "\n"


def run(cfg: Config, ctx) -> dict:
    TinyMDLM.load(cfg.checkpoint)  # a missing or broken checkpoint fails here, in one line, before any actor
    task = load_task(cfg.checkpoint)
    prompts, answers = task.heldout(cfg.samples, cfg.seed)
    defaults = dict(gen_length=task.n_digits, block_length=cfg.block_length, draft_steps=cfg.draft_steps,
                    threshold=cfg.threshold, mask_token_id=MASK)
    pool = DecoderPool(functools.partial(TinyMDLM.load, cfg.checkpoint), num_actors=cfg.num_actors,
                       defaults=defaults, max_batch=cfg.max_batch, num_cpus=ctx.actor_cpus(cfg.cpus_per_actor))
    try:
        pool.decode(prompts[:2], method="static")  # warm-up: actors started and the model loaded
        outputs = {m: evaluate(pool, prompts, m) for m in METHODS}
    finally:
        pool.shutdown()
    static = torch.stack([r["sequence"] for r in outputs["static"][0]])
    rows, nfe = {}, {}
    for method, (results, seconds) in outputs.items():
        seqs = torch.stack([r["sequence"] for r in results])
        nfe[method] = [r["nfe"] for r in results]
        rows[method] = {
            "accuracy": float((seqs[:, task.prompt_length:] == answers).all(dim=1).double().mean()),
            "tokens_per_s": task.n_digits * len(results) / seconds,
            "tokens_per_nfe": task.n_digits * len(results) / sum(nfe[method]),
            "exact_match": float((seqs == static).all(dim=1).double().mean()),
        }
    atomic_write(ctx.path("table.md"), table(rows, f"tiny MDLM ({type(task).__name__})").encode())
    plot_lines(ctx.path("nfe_per_sample.png"),
               {m: (range(cfg.samples), nfe[m]) for m in METHODS}, xlabel="held-out sample", ylabel="NFE",
               title=f"{task.n_digits} tokens, block {cfg.block_length}, k = {cfg.draft_steps}")
    summary = {f"{m}_{key}": value for m, r in rows.items() for key, value in r.items()}
    summary["freedave_nfe_speedup"] = rows["freedave"]["tokens_per_nfe"] / rows["static"]["tokens_per_nfe"]
    summary["freedave_time_speedup"] = rows["freedave"]["tokens_per_s"] / rows["static"]["tokens_per_s"]
    ctx.log(summary, step=0)  # one row with every metric (a Tune trial's reports must all carry the sweep metric)
    return summary
