"""`raylab bench freedave`: static vs FreeDave decoding at several batch sizes and models, in one run.

    raylab bench freedave                                     # batch 1,4,16; tiny MDLM + a random model per arch
    raylab bench freedave --batch 1,4,16 --model tiny,sdar    # a subset
    raylab bench freedave --model /models/TraDo-4B-Instruct --device cuda --samples 32
    raylab bench freedave --serving                           # continuous vs batch-by-batch serving

Models (`--model`, comma-separated): `tiny` is the committed tiny MDLM (assets/tiny_mdlm) on held-out problems of
its task; `llada`, `dream`, `sdar` are tiny random native models of each architecture (random prompts; a random
model's confidences are flat, so few drafts verify: this measures what FreeDave costs when it gains little); a
path loads a checkpoint natively (`raylab.diffusion.load_diffusion_lm`) with random prompts from its vocabulary.
Methods: `static`; `static_control`, static decoding again, timed as a method of its own (an A/A control: its
ratio to static is this run's noise floor); `freedave` with a fixed k (`--draft-steps`); `freedave_cost`, each
call's drafts per row picked by `raylab.diffusion.drafts.CostAwareDrafts` from the answer tokens per second its
earlier calls measured (one policy per model and batch size, learning through the warm-up and the passes; one
draft is the static code path itself; the drafts it picked in the timed passes are reported, as `d:calls`);
for full-attention models also `freedave_dual_cache`, FreeDave over the approximate dual cache (lossy: its
exact-match column is its agreement with static decoding). For each: tokens/NFE (mean over the timed passes),
tokens/s (median over `--repeats` timed passes after one warm-up pass of each method on max(8, 2 x batch)
prompts; methods interleaved within a pass and their order reversed every other pass, so that a shared
machine's load hits them alike), its ratio to static two ways (of the medians; and paired, the median of the
per-pass ratios, with their min and max) and exact match vs static; the metrics are
`raylab.diffusion.metrics`'. Writes a run directory (settings.json with the machine's load average,
results.json, results.md).

`--serving` measures serving instead: one stream of `--requests` requests (random prompts of lengths
`--prompt-lengths`, Poisson arrivals at `--rate` per second, fixed seed) replayed in this process, on the
wall clock, through the two scheduling rules of `DecoderActor` with at most `--max-batch` rows: `batches`
(whatever has arrived when the decoder is free, left-padded, run to completion by `generate`) and
`continuous` (`decode_stream`: arrived requests join between forwards, each leaves when done), for each
`--model` (the first batch size's model setting) and method static / freedave / freedave_cost (a fresh policy
per scheduling rule: per call batch by batch, per segment of 8 rounds in continuous batching). Each method and
rule first serves the whole stream once untimed (warm-up; the policies learn there), then `--repeats` replays,
interleaved, their order reversed every other time. Reported, as medians over the replays: requests/s
(requests over the time from the first arrival to the last answer), mean / median / p95 latency (answer time
minus arrival); and whether both rules gave every request the same sequence. Ray's transport is not in it.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from raylab.bench.common import add_bench_args, bench_run, finish, markdown_table
from raylab.diffusion import generate
from raylab.diffusion.decoding import decode_stream, left_pad
from raylab.diffusion.drafts import CostAwareDrafts
from raylab.diffusion.metrics import decode_metrics, versus_static

METHODS = ("static", "static_control", "freedave", "freedave_cost", "freedave_dual_cache")
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
    if method in ("static", "static_control"):
        return dict(method="static")
    if method == "freedave":
        return dict(method="freedave", draft_steps=args.draft_steps)
    if method == "freedave_dual_cache":
        return dict(method="freedave", draft_steps=args.draft_steps, dual_cache=True)
    return dict(method="freedave", draft_steps=args.draft_steps, draft_policy=CostAwareDrafts(args.draft_steps))


def measure(model, prompts, opts: dict, batch: int, args) -> dict:
    methods = [m for m in METHODS if m != "freedave_dual_cache" or opts.get("attention", "full") == "full"]
    per = {m: method_options(m, args) for m in methods}
    for m in methods:  # warm-up (the cost-aware policy measures its first calls here)
        decode_all(model, prompts[: max(8, 2 * batch)], batch, **opts, **per[m])
    policy = per["freedave_cost"]["draft_policy"]
    policy.picks.clear()  # what it runs in the timed passes
    seconds, nfe, outputs = {m: [] for m in methods}, {m: [] for m in methods}, {}
    for i in range(args.repeats):
        for m in methods if i % 2 == 0 else methods[::-1]:  # the order flips every pass: no method always first
            seqs, n, s = decode_all(model, prompts, batch, **opts, **per[m])
            seconds[m].append(s)
            nfe[m].append(n.double())
            outputs[m] = seqs  # decoding is deterministic: every repeat gives the same sequences
    static = outputs["static"]
    rows = {m: decode_metrics(outputs[m], torch.stack(nfe[m]).mean(dim=0), statistics.median(seconds[m]),
                              prompts.shape[1], static_sequences=static) for m in methods}
    ratios = versus_static(rows)
    pass_ratios = {m: [s / t for s, t in zip(seconds["static"], seconds[m])] for m in methods}  # per pass
    out = {m: {**rows[m], "tokens_per_nfe_vs_static": ratios[m]["tokens_per_nfe"],
               "tokens_per_s_vs_static": ratios[m]["tokens_per_s"],
               "tokens_per_s_vs_static_paired": statistics.median(pass_ratios[m]),
               "tokens_per_s_vs_static_min": min(pass_ratios[m]), "tokens_per_s_vs_static_max": max(pass_ratios[m]),
               "seconds": seconds[m]} for m in methods}
    out["freedave_cost"]["drafts_picked"] = dict(sorted(policy.picks.items()))
    return out


def request_stream(model_vocab: list[int], n: int, lengths: list[int], rate: float, seed: int) -> list:
    """[(arrival seconds, prompt)]: Poisson arrivals, prompt lengths drawn from `lengths`."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.empty(n, dtype=torch.float64).exponential_(rate, generator=g)
    vocab = torch.tensor(model_vocab)
    out, t = [], 0.0
    for i in range(n):
        t += float(gaps[i]) if i else 0.0
        length = lengths[int(torch.randint(0, len(lengths), (1,), generator=g))]
        out.append((t, vocab[torch.randint(0, len(vocab), (length,), generator=g)]))
    return out


def serve(model, stream: list, max_batch: int, continuous: bool, opts: dict) -> tuple[list, list, float]:
    """Replays `stream` on the wall clock: (answer sequences, latencies, seconds from first arrival to last
    answer) under batch-by-batch (`continuous=False`) or continuous batching."""
    start, nxt, n = time.perf_counter(), 0, len(stream)
    answers, latency = [None] * n, [0.0] * n

    def arrived(room: int) -> list[int]:  # indices of requests that have arrived, up to `room`
        nonlocal nxt
        now, taken = time.perf_counter() - start, []
        while nxt < n and len(taken) < room and stream[nxt][0] <= now:
            taken.append(nxt)
            nxt += 1
        return taken

    def finished(i: int, sequence: torch.Tensor) -> None:
        answers[i] = sequence
        latency[i] = time.perf_counter() - start - stream[i][0]

    while nxt < n:
        time.sleep(max(0.0, stream[nxt][0] - (time.perf_counter() - start)))
        first = arrived(max_batch)
        prompts, lengths = left_pad([stream[i][1] for i in first], opts["mask_token_id"])
        if not continuous:
            out = generate(model, prompts, prompt_lengths=lengths, **opts)
            P = prompts.shape[1]
            for row, i in enumerate(first):
                finished(i, out.sequences[row, P - len(stream[i][1]):])
            continue
        rows, live = list(first), [len(first)]

        def join() -> list:
            taken = arrived(max_batch - live[0])
            rows.extend(taken)
            live[0] += len(taken)
            return [stream[i][1] for i in taken]

        def done(index: int, sequence: torch.Tensor, nfe: int, step: torch.Tensor) -> None:
            live[0] -= 1
            finished(rows[index], sequence)

        decode_stream(model, prompts, join=join, done=done, prompt_lengths=lengths, **opts)
    if prompts.is_cuda:
        torch.cuda.synchronize()
    return answers, latency, time.perf_counter() - start - stream[0][0]


def serving(args, ctx) -> tuple[dict, list]:
    results, table_rows = {}, []
    lengths = [int(x) for x in args.prompt_lengths.split(",")]
    for spec in args.model.split(","):
        model, prompts, opts, label = setup(spec, 1, args.device, args.gen_length)
        if opts.get("block_layout", "answer") != "answer":
            print(f"{label}: skipped (continuous batching needs the answer block layout)", flush=True)
            continue
        vocab = sorted(set(prompts.flatten().tolist()) | set(range(min(64, opts["mask_token_id"]))))
        vocab = [t for t in vocab if t != opts["mask_token_id"]]
        stream = [(t, p.to(args.device)) for t, p in request_stream(vocab, args.requests, lengths, args.rate, seed=3)]
        keys = [(m, rule) for m in ("static", "freedave", "freedave_cost") for rule in ("batches", "continuous")]
        kw = {key: {**{k: v for k, v in opts.items() if k != "block_layout"}, **method_options(key[0], args)}
              for key in keys}  # one policy per method and rule
        for key in keys:  # warm-up: the whole stream once (the policies learn here)
            serve(model, stream, args.max_batch, key[1] == "continuous", kw[key])
        runs, got = {key: [] for key in keys}, {}
        for i in range(args.repeats):  # replays interleaved, the order reversed every other time
            for key in keys if i % 2 == 0 else keys[::-1]:
                answers, latency, seconds = serve(model, stream, args.max_batch, key[1] == "continuous", kw[key])
                lat = sorted(latency)
                runs[key].append({"requests_per_s": len(stream) / seconds, "latency_mean_s": sum(lat) / len(lat),
                                  "latency_p50_s": lat[len(lat) // 2],
                                  "latency_p95_s": lat[int(0.95 * (len(lat) - 1))]})
                got[key] = answers
        for method, rule in keys:
            row = {stat: statistics.median(r[stat] for r in runs[(method, rule)]) for stat in runs[(method, rule)][0]}
            same = all(torch.equal(a, b) for a, b in zip(got[(method, "batches")], got[(method, "continuous")]))
            results[f"{spec}/{method}/{rule}"] = {"model": label, **row, "replays": runs[(method, rule)]}
            results[f"{spec}/{method}/same_answers"] = same
            table_rows.append([label, method, rule, row["requests_per_s"], 1e3 * row["latency_mean_s"],
                               1e3 * row["latency_p50_s"], 1e3 * row["latency_p95_s"], "yes" if same else "NO"])
            if rule == "continuous":
                print(f"{label} {method}: " + ", ".join(f"{r[2]} {r[3]:.1f} req/s" for r in table_rows[-2:]),
                      flush=True)
    return results, table_rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raylab bench freedave", description=__doc__.splitlines()[0])
    add_bench_args(p, ray=False)
    p.add_argument("--model", default="tiny,llada,dream,sdar", help="tiny, llada, dream, sdar or checkpoint paths")
    p.add_argument("--batch", default="1,4,16", help="batch sizes, comma-separated")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--gen-length", type=int, default=16, help="answer length for the native models")
    p.add_argument("--draft-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7, help="timed passes per method")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--serving", action="store_true", help="measure continuous vs batch-by-batch serving instead")
    p.add_argument("--requests", type=int, default=64, help="--serving: requests in the stream")
    p.add_argument("--rate", type=float, default=200.0, help="--serving: mean arrivals per second")
    p.add_argument("--prompt-lengths", default="3,5,7,9", help="--serving: prompt lengths drawn from")
    p.add_argument("--max-batch", type=int, default=8, help="--serving: rows decoded at a time")
    args = p.parse_args(argv)
    if args.serving:
        if args.model == p.get_default("model"):
            args.model = "llada,dream"
        if args.requests < 1 or args.rate <= 0 or args.max_batch < 1:
            p.error("--requests, --rate and --max-batch must be positive")
        torch.set_num_threads(args.threads)
        with bench_run("freedave-serving", args, settings=vars(args), use_ray=False) as ctx:
            results, rows = serving(args, ctx)
            finish(ctx, results, markdown_table(["model", "method", "scheduling", "requests/s", "latency mean ms",
                                                 "latency p50 ms", "latency p95 ms", "same answers"], rows))
        return 0
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
                    picked = r.get("drafts_picked")
                    table_rows.append([label, batch, m, r["tokens_per_nfe"], r["tokens_per_s"],
                                       f"{r['tokens_per_s_vs_static']:.2f}x",
                                       f"{r['tokens_per_s_vs_static_paired']:.2f}x",
                                       f"{r['tokens_per_s_vs_static_min']:.2f}-{r['tokens_per_s_vs_static_max']:.2f}x",
                                       f"{100 * r['exact_match']:.1f}%",
                                       " ".join(f"{d}:{c}" for d, c in picked.items()) if picked else ""])
                print(f"{label} batch {batch}: " + ", ".join(
                    f"{m} {r['tokens_per_s_vs_static']:.2f}x" for m, r in rows.items()), flush=True)
        table = markdown_table(["model", "batch", "method", "tokens/NFE", "tokens/s", "tokens/s vs static",
                                "paired", "per-pass range", "exact match vs static", "drafts: calls"],
                               table_rows)
        finish(ctx, results, table)
    return 0
