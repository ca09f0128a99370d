"""Experiment `freedave_eval`: static, parallel and FreeDave decoding side by side, as in the seed's tables.

    raylab run experiments/freedave_eval.yaml                  # the tiny MDLM on its held-out task (CPU)
    raylab run experiments/freedave_eval.yaml draft_steps=4 block_length=4
    raylab tune experiments/freedave_eval.yaml                 # the sweep over draft_steps and block_length
    raylab run experiments/freedave_trado4b.yaml               # TraDo-4B on GSM8K: needs a GPU and the weights
    raylab run experiments/freedave_trado4b.yaml dataset=math500 data_source=HuggingFaceH4/MATH-500

`kind` says what `checkpoint` is: `tiny` (a TinyMDLM directory with its task.json; problems are held-out
draws of that task) or `llada` / `dream` / `sdar` (a checkpoint loaded natively by raylab.diffusion; a local
directory, or a hub id fetched with huggingface_hub). With a real model the problems come from `dataset`
(gsm8k or math500, read from `data_source`: a local file/directory or a hub id), are put through the
checkpoint's chat template, and an answer is graded by `raylab.grpo.rewards`' math_verify.

Every problem is one request to a pool of decoder actors (`raylab.diffusion.actors`), which batch requests as
they arrive. Reports, per method (metrics from `raylab.diffusion.metrics`): accuracy, tokens/s (answer tokens
over the wall-clock time of the method's pass through the pool), tokens per NFE, model calls per token, and the
exact-match rate against static decoding. One evaluation is the run's single step (STEP_NAME "evaluation"); it
is not checkpointed: a resumed run evaluates again. Writes `table.md` (the seed's layout: differences and ratios
against static) and, from the logged row, `nfe_per_sample.png`.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Literal

import ray
import torch
from pydantic import Field, field_validator, model_validator

from raylab.config import RunConfig, check_model_path, looks_like_path
from raylab.diffusion.actors import DecoderPool
from raylab.diffusion.metrics import decode_metrics
from raylab.plots import plot_lines
from raylab.results import atomic_write

STEP_NAME = "evaluation"
METHODS = ("static", "parallel", "freedave")
LABELS = {"static": "Static", "parallel": "Parallel", "freedave": "FreeDave"}


class Config(RunConfig):
    experiment: Literal["freedave_eval"] = "freedave_eval"
    kind: Literal["tiny", "llada", "dream", "sdar"] = Field("tiny", description="what `checkpoint` holds")
    checkpoint: str = Field("assets/tiny_mdlm", description="a TinyMDLM directory, or a checkpoint directory / "
                                                            "hub id of the `kind` architecture")
    dataset: Literal["task", "gsm8k", "math500"] = Field("task", description="task: the tiny model's own task")
    data_source: str | None = Field(None, description="gsm8k/math500: local file/directory or hub id")
    samples: int = Field(200, ge=1)
    gen_length: int | None = Field(None, ge=1, description="answer tokens (default: the tiny task's length)")
    block_length: int = Field(12, ge=1)
    draft_steps: int = Field(8, ge=1)
    eager_drafts: bool = Field(False, description="FreeDave drafts across block boundaries (TraDo: true)")
    stop_on_eos_block: bool = Field(False, description="a row stops at a finished block of EOS tokens")
    use_cache: bool = Field(False, description="exact prefix KV cache (block-causal models)")
    threshold: float = Field(0.9, gt=0, le=1, description="parallel decoding's confidence threshold")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("cpu", description="cpu or cuda")
    num_actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    max_batch: int = Field(1, ge=1, description="largest batch an actor forms from waiting requests (1: one "
                                                "sequence at a time, the paper's setting)")
    continuous: bool = Field(False, description="actors batch continuously: requests join between forwards")

    @field_validator("checkpoint")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not looks_like_path(path) and not Path(path).exists():
            return path  # a hub id
        return str(Path(path).expanduser().resolve())  # Tune trials run in their own working directory

    @model_validator(mode="after")
    def _consistent(self):
        check_model_path(self.checkpoint, "checkpoint")
        if (self.kind == "tiny") != (self.dataset == "task"):
            raise ValueError(f"dataset: {self.dataset!r} does not go with kind {self.kind!r} (the tiny MDLM "
                             "answers its own task; real models answer gsm8k or math500)")
        if self.kind != "tiny" and self.gen_length is None:
            raise ValueError("gen_length: required for a real model (the seed's tables use 256)")
        if self.use_cache and self.kind not in ("sdar",):
            raise ValueError(f"use_cache: the exact prefix cache needs a block-causal model (sdar), not {self.kind}")
        return self


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
            cells = [f"{acc:.2f} ({acc - 100 * base['accuracy']:+.2f})",
                     f"{tps:.1f} ({tps / base['tokens_per_s']:.2f}x)",
                     f"{tpn:.2f} ({tpn / base['tokens_per_nfe']:.2f}x)"]
        lines.append(f"| {model if i == 0 else ''} | {LABELS[method]} | " + " | ".join(cells) +
                     f" | {100 * r['exact_match']:.1f} |")
    return "\n".join(lines) + "\n"


def local_checkpoint(cfg: Config) -> Path:
    """The checkpoint directory: as given, or a hub id fetched into the Hugging Face cache."""
    if Path(cfg.checkpoint).exists():
        return Path(cfg.checkpoint)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(cfg.checkpoint))


class Problems:
    """Prompts (token ids, one tensor each), a grader and the decoding defaults for one configuration."""

    def __init__(self, cfg: Config):
        if cfg.kind == "tiny":
            self._tiny(cfg)
        else:
            self._real(cfg)

    def _tiny(self, cfg: Config) -> None:
        from raylab.diffusion.model import TinyMDLM
        from raylab.diffusion.tasks import MASK, load_task

        TinyMDLM.load(cfg.checkpoint)  # a missing or broken checkpoint fails here, in one line, before any actor
        task = load_task(cfg.checkpoint)
        prompts, self.answers = task.heldout(cfg.samples, cfg.seed)
        self.prompts = list(prompts)
        self.label = f"tiny MDLM ({type(task).__name__})"
        self.load = functools.partial(TinyMDLM.load, cfg.checkpoint)
        self.defaults = dict(gen_length=cfg.gen_length or task.n_digits, mask_token_id=MASK)

    def _real(self, cfg: Config) -> None:
        from transformers import AutoTokenizer

        from raylab.diffusion.native import ArchConfig, load_native

        path = local_checkpoint(cfg)
        arch = ArchConfig.from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
        if arch.arch != cfg.kind:
            raise ValueError(f"checkpoint: {path} holds a {arch.arch} model, not kind {cfg.kind}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.examples = load_examples(cfg)
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": e["prompt"]}],
                                                    add_generation_prompt=True, tokenize=False)
                 for e in self.examples]
        self.prompts = [torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        self.label = path.name
        dtype = getattr(torch, cfg.dtype)
        self.load = functools.partial(load_native, path, dtype=dtype, device=cfg.device, arch=cfg.kind)
        self.defaults = dict(gen_length=cfg.gen_length, mask_token_id=arch.mask_token_id,
                             shifted_logits=arch.shifted_logits, attention=arch.attention,
                             block_layout="absolute" if arch.attention == "block_causal" else "answer",
                             eos_token_id=arch.eos_token_id)

    def correct(self, cfg: Config, sequences: list[torch.Tensor]) -> torch.Tensor:
        """Whether each decoded answer is right."""
        if cfg.kind == "tiny":
            got = torch.stack([s[-self.answers.shape[1]:] for s in sequences])
            return (got == self.answers).all(dim=1)
        from raylab.grpo.rewards import resolve_reward

        texts = [self.tokenizer.decode(s[len(p):], skip_special_tokens=True)
                 for s, p in zip(sequences, self.prompts)]
        return torch.tensor(resolve_reward("math_verify")(texts, self.examples)) > 0.5


def load_examples(cfg: Config) -> list[dict]:
    if cfg.dataset == "gsm8k":
        from raylab.data.gsm8k import load_gsm8k

        return load_gsm8k(cfg.data_source or "openai/gsm8k", split="test", template="boxed", limit=cfg.samples)
    from raylab.data.math500 import load_math500

    return load_math500(cfg.data_source or "HuggingFaceH4/MATH-500", split="test", limit=cfg.samples)


def evaluate(pool: DecoderPool, prompts: list[torch.Tensor], method: str) -> tuple[list[dict], float]:
    start = time.perf_counter()
    results = ray.get([pool.submit(p, method=method) for p in prompts])
    return results, time.perf_counter() - start


def run(cfg: Config, ctx) -> dict:
    problems = Problems(cfg)
    defaults = dict(problems.defaults, block_length=cfg.block_length, draft_steps=cfg.draft_steps,
                    threshold=cfg.threshold, eager_drafts=cfg.eager_drafts, use_cache=cfg.use_cache,
                    stop_on_eos_block=cfg.stop_on_eos_block)
    if not cfg.stop_on_eos_block:
        defaults.pop("eos_token_id", None)
    pool = DecoderPool(problems.load, num_actors=cfg.num_actors, defaults=defaults, max_batch=cfg.max_batch,
                       num_cpus=ctx.actor_cpus(cfg.cpus_per_actor), num_gpus=cfg.gpus_per_actor,
                       continuous=cfg.continuous)
    try:
        evaluate(pool, problems.prompts[:2], "static")  # warm-up: actors started and the model loaded
        outputs = {m: evaluate(pool, problems.prompts, m) for m in METHODS}
    finally:
        pool.shutdown()
    static = [r["sequence"] for r in outputs["static"][0]]
    rows, nfe = {}, {}
    for method, (results, seconds) in outputs.items():
        seqs = [r["sequence"] for r in results]
        nfe[method] = [r["nfe"] for r in results]
        rows[method] = answer_metrics(seqs, static, problems, cfg, seconds, nfe[method],
                                      [r["model_calls"] for r in results])
    atomic_write(ctx.path("table.md"), table(rows, problems.label).encode())
    summary = {f"{m}_{key}": value for m, r in rows.items() for key, value in r.items()}
    summary["freedave_nfe_speedup"] = rows["freedave"]["tokens_per_nfe"] / rows["static"]["tokens_per_nfe"]
    summary["freedave_time_speedup"] = rows["freedave"]["tokens_per_s"] / rows["static"]["tokens_per_s"]
    # one row with every metric (a Tune trial's reports must all carry the sweep metric), plus the NFE per sample
    ctx.log({**summary, "nfe_per_sample": nfe}, step=1)
    return summary


def answer_metrics(seqs, static, problems: Problems, cfg: Config, seconds: float, nfe: list[int],
                   model_calls: list[int]) -> dict:
    """decode_metrics over sequences of possibly different prompt lengths: every decoded answer token counts
    (the absolute block layout decodes up to a block more than `gen_length`, to fill the last block)."""
    gen = min(len(s) - len(p) for s, p in zip(seqs, problems.prompts))
    answers = torch.stack([s[len(p):len(p) + gen] for s, p in zip(seqs, problems.prompts)])  # for the shape
    out = decode_metrics(answers, torch.tensor(nfe), seconds, 0, correct=problems.correct(cfg, seqs),
                         model_calls=torch.tensor(model_calls),
                         tokens=sum(len(s) - len(p) for s, p in zip(seqs, problems.prompts)))
    out["exact_match"] = sum(torch.equal(a, b) for a, b in zip(seqs, static)) / len(seqs)
    return out


def plot(cfg: Config, ctx) -> None:
    """nfe_per_sample.png from the logged row."""
    rows = [r for r in ctx.metrics() if r.get("nfe_per_sample")]
    if not rows:
        return
    nfe = rows[-1]["nfe_per_sample"]
    plot_lines(ctx.path("nfe_per_sample.png"), {m: (range(len(v)), v) for m, v in nfe.items()},
               xlabel="held-out sample", ylabel="NFE",
               title=f"block {cfg.block_length}, k = {cfg.draft_steps}")
