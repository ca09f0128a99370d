"""`raylab bench freedave`: static vs FreeDave decoding at several batch sizes and models, in one run.

    raylab bench freedave                                     # batch 1,4,16; tiny MDLM + a random model per arch
    raylab bench freedave --batch 1,4,16 --model tiny,sdar    # a subset
    raylab bench freedave --model /models/TraDo-4B-Instruct --device cuda --samples 32

Models (`--model`, comma-separated): `tiny` is the committed tiny MDLM (assets/tiny_mdlm) on held-out problems of
its task; `llada`, `dream`, `sdar` are tiny random native models of each architecture (random prompts; a random
model's confidences are flat, so few drafts verify: this measures what FreeDave costs when it gains little); a
path loads a checkpoint natively (`raylab.diffusion.load_diffusion_lm`) with random prompts from its vocabulary.
Methods: `static`; `freedave` with a fixed k (`--draft-steps`); `freedave_cost`, the drafts per row of each round
picked by `raylab.diffusion.drafts.CostAwareDrafts` from measured call times and acceptance (one policy per model
and batch size, learning through the warm-up and the passes; when one draft is best it decodes by the static
code path); for full-attention models also `freedave_dual_cache`, FreeDave over the approximate dual cache (lossy: its
exact-match column is its agreement with static decoding). For each: tokens/NFE, tokens/s
(median over `--repeats` passes after one warm-up pass of each method on max(8, 2 x batch) prompts, methods
interleaved so that a shared machine's load hits them alike; the spread, min and max, is kept too) and exact
match vs static; the metrics are `raylab.diffusion.metrics`'. Writes a run directory (settings.json with the
machine's load average, results.json, results.md).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from raylab.bench.common import add_bench_args, bench_run, finish, markdown_table
from raylab.diffusion import generate
from raylab.diffusion.drafts import CostAwareDrafts
from raylab.diffusion.metrics import decode_metrics, versus_static

METHODS = ("static", "freedave", "freedave_cost", "freedave_dual_cache")
ARCHS = ("llada", "dream", "sdar")


def setup(spec: str, samples: int, device: str, gen_length: int):
    """(model, prompts, decoding options, label) for one `--model` entry."""
    if spec == "tiny" or (Path(spec) / "task.json").is_file():
        from raylab.diffusion.model import TinyMDLM
        from raylab.diffusion.tasks import MASK, load_task

        path = "assets/tiny_mdlm" if spec == "tiny" else spec
        task = load_task(path)
        prompts, _ = task.heldout(samples, seed=1)
        opts = dict(gen_length=task.n_digits, block_length=task.n_digits, mask_token_id=MASK)
        return TinyMDLM.load(path).to(device), prompts.to(device), opts, f"tiny MDLM ({type(task).__name__})"
    if spec in ARCHS:
        from raylab.diffusion.native import random_model

        model = random_model(spec, seed=0, scale=8.0).to(device)
        label = f"random {spec}"
    else:
        from raylab.diffusion.native import load_native

        model = load_native(spec, dtype=torch.bfloat16 if device == "cuda" else torch.float32, device=device)
        label = Path(spec).name
    cfg = model.config
    vocab = [t for t in range(min(cfg.vocab_size, 50_000)) if t not in (cfg.mask_token_id, cfg.eos_token_id)]
    g = torch.Generator().manual_seed(1)
    prompts = torch.tensor(vocab)[torch.randint(0, len(vocab), (samples, 7), generator=g)].to(device)
    opts = dict(gen_length=gen_length, block_length=cfg.block_size or 4, mask_token_id=cfg.mask_token_id,
                shifted_logits=cfg.shifted_logits, attention=cfg.attention,
                block_layout="absolute" if cfg.attention == "block_causal" else "answer")
    return model, prompts, opts, label


def decode_all(model, prompts: torch.Tensor, batch: int, **kw) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(sequences, per-sequence NFE, seconds) for all prompts, `batch` at a time."""
    start, seqs, nfe = time.perf_counter(), [], []
    for i in range(0, len(prompts), batch):
        out = generate(model, prompts[i:i + batch], **kw)
        seqs.append(out.sequences)
        nfe.append(out.nfe)
    if prompts.is_cuda:
        torch.cuda.synchronize()
    return torch.cat(seqs), torch.cat(nfe), time.perf_counter() - start


def method_options(method: str, args) -> dict:
    if method == "static":
        return dict(method="static")
    if method == "freedave":
        return dict(method="freedave", draft_steps=args.draft_steps)
    if method == "freedave_dual_cache":
        return dict(method="freedave", draft_steps=args.draft_steps, dual_cache=True)
    return dict(method="freedave", draft_steps=args.draft_steps, draft_policy=CostAwareDrafts(args.draft_steps))


def measure(model, prompts, opts: dict, batch: int, args) -> dict:
    methods = [m for m in METHODS if m != "freedave_dual_cache" or opts.get("attention", "full") == "full"]
    per = {m: method_options(m, args) for m in methods}
    for m in methods:  # warm-up (the cost-aware policy measures its first call sizes here)
        decode_all(model, prompts[: max(8, 2 * batch)], batch, **opts, **per[m])
    seconds, outputs = {m: [] for m in methods}, {}
    for _ in range(args.repeats):
        for m in methods:
            seqs, nfe, s = decode_all(model, prompts, batch, **opts, **per[m])
            seconds[m].append(s)
            outputs[m] = seqs, nfe  # decoding is deterministic: every repeat gives the same
    static = outputs["static"][0]
    rows = {m: decode_metrics(outputs[m][0], outputs[m][1], statistics.median(seconds[m]), prompts.shape[1],
                              static_sequences=static) for m in methods}
    ratios = versus_static(rows)
    pass_ratios = {m: [s / t for s, t in zip(seconds["static"], seconds[m])] for m in methods}  # per pass
    return {m: {**rows[m], "tokens_per_nfe_vs_static": ratios[m]["tokens_per_nfe"],
                "tokens_per_s_vs_static": ratios[m]["tokens_per_s"],
                "tokens_per_s_vs_static_min": min(pass_ratios[m]), "tokens_per_s_vs_static_max": max(pass_ratios[m]),
                "seconds": seconds[m]} for m in methods}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raylab bench freedave", description=__doc__.splitlines()[0])
    add_bench_args(p, ray=False)
    p.add_argument("--model", default="tiny,llada,dream,sdar", help="tiny, llada, dream, sdar or checkpoint paths")
    p.add_argument("--batch", default="1,4,16", help="batch sizes, comma-separated")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--gen-length", type=int, default=16, help="answer length for the native models")
    p.add_argument("--draft-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        p.error(f"--batch: expected comma-separated integers, got {args.batch!r}")
    if min(batches) < 1 or args.samples < 1 or args.repeats < 1:
        p.error("--batch, --samples and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    models = args.model.split(",")
    with bench_run("freedave", args, settings=vars(args), use_ray=False) as ctx:
        results, table_rows = {}, []
        for spec in models:
            model, prompts, opts, label = setup(spec, args.samples, args.device, args.gen_length)
            for batch in batches:
                rows = measure(model, prompts, opts, batch, args)
                results[f"{spec}/batch{batch}"] = {"model": label, "batch": batch, "options": opts, **rows}
                for m, r in rows.items():
                    table_rows.append([label, batch, m, r["tokens_per_nfe"], r["tokens_per_s"],
                                       f"{r['tokens_per_s_vs_static']:.2f}x",
                                       f"{r['tokens_per_s_vs_static_min']:.2f}-{r['tokens_per_s_vs_static_max']:.2f}x",
                                       f"{100 * r['exact_match']:.1f}%"])
                print(f"{label} batch {batch}: " + ", ".join(
                    f"{m} {r['tokens_per_s_vs_static']:.2f}x" for m, r in rows.items()), flush=True)
        table = markdown_table(["model", "batch", "method", "tokens/NFE", "tokens/s", "tokens/s vs static",
                                "per-pass range", "exact match vs static"], table_rows)
        finish(ctx, results, table)
    return 0
