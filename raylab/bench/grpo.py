"""Benchmark `grpo`: seconds per GRPO step of raylab vs TRL's GRPOTrainer, and rollout tokens/s of the hf, torch
and vllm backends side by side, all measured in this run on the same model.

    raylab bench grpo                                  # 4 prompts x 8 completions of <= 32 tokens, 4 rounds x 5 steps
    raylab bench grpo --steps 10 --backends hf,torch   # skip the vLLM throughput
    raylab bench grpo --gradient-checkpointing         # checkpointing on both sides
    raylab bench grpo --skip-trl --address auto        # raylab and rollout throughput only, on a cluster
    raylab bench grpo --step-backends "" --backends "" --trl-omp-wait-policy default   # TRL with spinning threads

The model is a random Llama of about 3.6M parameters with the character tokenizer (hidden 256, 6 layers),
saved to a temporary folder and loaded by both sides. Same work on both sides: temperature 1, no KL (TRL's
default beta=0), one update per batch, the same reward, the same end-of-sequence token, and the same gradient
checkpointing setting (off unless `--gradient-checkpointing`; TRL's own default is on). Same threads: TRL's
process has `--cpus` torch threads; raylab's `--workers` rollout actors share `--cpus` threads in the rollout
phase and the learner actor has `--cpus` threads in its phase (the phases never overlap), and the actors' idle
OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) rather than spin into the other phase; TRL runs in a fresh
process per round with the same wait policy (set before its torch starts), so neither side's idle threads spin
against a busy machine while the other's sleep. raylab's step is timed
with the `hf` rollout backend (transformers `generate`, what TRL uses) and with the `torch` backend (raylab's own
KV-cached sampler, the same distribution), so the table separates what the decoder buys from what the layout
buys. The sides take turns for `--rounds` rounds, the order reversed every other round (TRL, raylab hf, raylab
torch; raylab torch, raylab hf, TRL; ...), each a fresh trainer whose first step is a warm-up, not timed. Each
round prints every side's median step and the load average before and after it. Two ratios to TRL: pooled (the
median over all timed steps of each side) and paired (raylab's median over TRL's in the same round, the median
over rounds), which a load burst confined to one round cannot move much. Each side's settings are printed;
the run directory (runs/bench-grpo-<time>/) holds settings.json (with the machine and its load average),
results.json (every round's steps and loads) and results.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from raylab.bench.common import add_bench_args, bench_run, finish, markdown_table

PROMPTS = [f"{a}+{b}=" for a, b in ((12, 34), (5, 67), (89, 1), (23, 45), (60, 7), (31, 13), (8, 80), (44, 2))]


def digit_reward(completions: list[str], examples: list[dict] | None = None, **_) -> list[float]:
    """A cheap reward with spread (the share of digits); its value does not matter for timing."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


MODEL_SIZES = {  # build_tiny_model arguments: the CPU reference (~3.6M) and the GPU reference (~27M)
    "3.6m": dict(hidden_size=256, num_layers=6, num_heads=8, intermediate_size=512),
    "27m": dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1536),
}


def make_model(folder: Path, size: str) -> str:
    from raylab.grpo.policy import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, **MODEL_SIZES[size])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def time_trl(model_dir: str, args) -> list[float]:
    """TRL's timed steps, in a fresh spawned process with OMP_WAIT_POLICY=PASSIVE, as raylab's actors have
    (`--trl-omp-wait-policy default` leaves it unset there, to show what that costs on a busy machine)."""
    import multiprocessing

    previous = os.environ.get("OMP_WAIT_POLICY")
    if args.trl_omp_wait_policy == "PASSIVE":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # the child's OpenMP runtime reads it when torch loads there
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(trl_steps, (model_dir, args))
    finally:
        if previous is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = previous


def trl_steps(model_dir: str, args) -> list[float]:
    """Seconds of each of TRL's GRPOTrainer steps after the first (run in the process `time_trl` starts)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.cpus)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    prompts = (PROMPTS * 100)[: args.prompts * (args.steps + 1)]
    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts * args.k,
                        num_generations=args.k, max_completion_length=args.max_new_tokens, learning_rate=1e-4,
                        max_steps=args.steps + 1, use_cpu=args.device == "cpu", bf16=args.device == "cuda",
                        report_to="none", save_strategy="no", gradient_checkpointing=args.gradient_checkpointing,
                        logging_steps=1000, beta=0.0, temperature=1.0, seed=0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=digit_reward,
                          args=config, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[Clock()])
    trainer.train()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_raylab(model_dir: str, backend: str, args) -> list[dict]:
    """The metrics of each timed step (step_s, and its phases rollout_s, learner_s, sync_s)."""
    from raylab.config import validate
    from raylab.grpo.trainer import GRPOTrainer

    gpu_share = 1 / (args.workers + 1) if args.device == "cuda" else 0.0  # all actors share the one GPU
    cfg = validate({"experiment": "grpo", "seed": 0, "steps": args.steps + 1, "prompts_per_step": args.prompts,
                    "policy": {"model": model_dir},
                    "rollout": {"backend": backend, "num_workers": args.workers,
                                "cpus_per_worker": max(args.cpus - 1, 1) / args.workers,
                                "gpus_per_worker": gpu_share, "num_generations": args.k,
                                "max_new_tokens": args.max_new_tokens,
                                "threads": rollout_threads(args)},
                    "learner": {"lr": 1e-4, "cpus": 1, "gpus": gpu_share, "micro_batch_size": args.prompts * args.k,
                                "threads": args.learner_threads or args.cpus,
                                "gradient_checkpointing": args.gradient_checkpointing}})
    examples = [{"prompt": p, "answer": ""} for p in PROMPTS]
    trainer = GRPOTrainer(cfg, examples, examples, digit_reward)
    try:
        return [trainer.step(step) for step in range(args.steps + 1)][1:]
    finally:
        trainer.shutdown()


def rollout_threads(args) -> int:
    return max(1, args.cpus // args.workers)


def side_settings(args) -> dict:
    """What each side runs with, printed and stored in settings.json."""
    same = {"model": f"random Llama {args.model_size}, char tokenizer", "prompts": args.prompts, "k": args.k,
            "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "kl": 0.0, "updates_per_batch": 1,
            "gradient_checkpointing": args.gradient_checkpointing, "device": args.device}
    return {"trl": {**same, "torch_threads": args.cpus, "processes": 1,
                    "omp_wait_policy": args.trl_omp_wait_policy},
            "raylab": {**same, "rollout_workers": args.workers, "threads_per_rollout_worker": rollout_threads(args),
                       "learner_threads": args.learner_threads or args.cpus, "omp_wait_policy": "PASSIVE",
                       "step_backends": args.step_backends},
            "rounds": args.rounds, "timed_steps_per_round": args.steps}


def rollout_throughput(model_dir: str, backend: str, args) -> float:
    """Completion tokens per second of one backend in this process, median of 3 timed calls."""
    import torch

    from raylab.grpo.rollout import SamplingConfig, make_rollout

    torch.set_num_threads(args.cpus)
    if backend == "vllm":
        options = {"gpu_memory_utilization": 0.2 if args.device == "cpu" else 0.3, "max_model_len": 128,
                   "max_num_seqs": 256, "dtype": "float32" if args.device == "cpu" else "bfloat16"}
    else:
        options = {"device": args.device}
    rollout = make_rollout(backend, model_dir, **options)
    sampling = SamplingConfig(args.k, args.max_new_tokens)
    prompts = (PROMPTS * 8)[: args.rollout_prompts]
    rollout.generate(prompts, sampling, seed=0)  # warm-up
    rates = []
    for seed in range(1, 4):
        start = time.perf_counter()
        tokens = sum(len(c.completion_ids) for c in rollout.generate(prompts, sampling, seed=seed))
        rates.append(tokens / (time.perf_counter() - start))
    del rollout
    return statistics.median(rates)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raylab bench grpo", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per side and round (after a warm-up step)")
    p.add_argument("--rounds", type=int, default=4, help="rounds in which the sides take turns (order reversed "
                   "every other round)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--k", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="raylab rollout workers")
    p.add_argument("--rollout-prompts", type=int, default=32, help="prompts per call in the throughput test")
    p.add_argument("--backends", default="hf,torch,vllm", help="rollout backends to measure tokens/s of")
    p.add_argument("--step-backends", default="hf,torch", help="rollout backends of the timed raylab steps")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="3.6m")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cpus", type=int, default=2, help="total threads of each side: TRL's torch threads; raylab's "
                   "rollout workers share them in the rollout phase and the learner has them in its phase")
    p.add_argument("--learner-threads", type=int, default=None,
                   help="torch threads of raylab's learner actor (default: --cpus; the phases never overlap)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="gradient checkpointing on both sides (default: off on both)")
    p.add_argument("--trl-omp-wait-policy", choices=["PASSIVE", "default"], default="PASSIVE",
                   help="TRL process's OpenMP wait policy: PASSIVE as raylab's actors (fair), or the runtime's default "
                   "(spinning idle threads) to measure what that costs")
    add_bench_args(p)
    args = p.parse_args(argv)
    # Ray starts its workers at nice 15; on a shared machine that starves raylab's actors against the baseline,
    # which runs at the default priority. Same priority for both (no effect on an idle machine).
    os.environ.setdefault("RAY_worker_niceness", "0")
    settings = side_settings(args)
    for side in ("trl", "raylab"):
        print(f"{side} settings: " + ", ".join(f"{k}={v}" for k, v in settings[side].items()))
    with tempfile.TemporaryDirectory() as tmp, bench_run("grpo", args, settings, ray_cpus=args.cpus) as ctx:
        model_dir = make_model(Path(tmp) / "model", args.model_size)
        load_start = os.getloadavg()[0]
        print(f"device: {args.device}; model: random Llama {_params(model_dir) / 1e6:.1f}M params, char tokenizer; "
              f"{args.prompts} prompts x {args.k} completions of {args.max_new_tokens} tokens; load average "
              f"{load_start:.1f} on {os.cpu_count()} CPUs")
        backends = [b for b in args.step_backends.split(",") if b]
        sides = ([] if args.skip_trl else ["trl"]) + backends
        rounds = []
        # the sides alternate round by round, in reversed order every other round (T H R, R H T, ...), so a burst
        # of load from elsewhere, or a drift of the machine's speed, hits every side alike
        for r in range(args.rounds):
            for side in round_order(sides, r):
                load_before = os.getloadavg()[0]
                if side == "trl":
                    metrics, steps = None, time_trl(model_dir, args)
                else:
                    metrics = time_raylab(model_dir, side, args)
                    steps = [m["step_s"] for m in metrics]
                rounds.append({"round": r + 1, "side": side, "step_s": steps, "median_s": statistics.median(steps),
                               "load_before": load_before, "load_after": os.getloadavg()[0],
                               **({} if metrics is None else {"phases": metrics})})
                print(f"round {r + 1} {side_label(side, args)}: median {rounds[-1]['median_s']:.3f} s/step over "
                      f"{len(steps)} steps (min {min(steps):.3f}, max {max(steps):.3f}); load average "
                      f"{load_before:.1f} -> {rounds[-1]['load_after']:.1f}", flush=True)
        results, rows = summarize_rounds(rounds, sides, args)
        rates = {b: rollout_throughput(model_dir, b, args) for b in args.backends.split(",") if b}
        results["rollout_tokens_per_s"] = rates
        table = markdown_table(["side", "s/step (median)", "rollout s", "learner s", "sync s", "x TRL (pooled)",
                                "x TRL (median of rounds)"], rows)
        table += "\n\neach round (median s/step; load average before -> after):\n\n" + markdown_table(
            ["round", "side", "s/step", "min", "max", "load before", "load after"],
            [[r["round"], side_label(r["side"], args), r["median_s"], min(r["step_s"]), max(r["step_s"]),
              r["load_before"], r["load_after"]] for r in rounds])
        table += (f"\n\ntarget: <= {0.8 if args.device == 'cpu' else 0.5}x TRL's step time; load average "
                  f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} after the rounds\n\nrollout throughput, "
                  f"{args.rollout_prompts} prompts x {args.k} x {args.max_new_tokens} tokens, one process:\n\n")
        table += markdown_table(["backend", "tokens/s", "x hf"],
                                [[b, r, r / rates["hf"] if "hf" in rates else ""] for b, r in rates.items()])
        finish(ctx, results, table)
    return 0


def round_order(sides: list[str], round: int) -> list[str]:
    """The order the sides run in: as given in even rounds, reversed in odd ones."""
    return list(sides) if round % 2 == 0 else list(reversed(sides))


def side_label(side: str, args) -> str:
    return "TRL GRPOTrainer (hf generate)" if side == "trl" else f"raylab ({side} rollouts, {args.workers} workers)"


def summarize_rounds(rounds: list[dict], sides: list[str], args) -> tuple[dict, list[list]]:
    """results.json entries and table rows. Two ratios to TRL: pooled (median over every timed step of each
    side) and paired (per round, raylab's median over TRL's median of the same round; the median of those),
    which a load burst in one round moves least."""
    by_side = {side: [r for r in rounds if r["side"] == side] for side in sides}
    pooled = {side: statistics.median(t for r in rs for t in r["step_s"]) for side, rs in by_side.items()}
    trl_rounds = {r["round"]: r["median_s"] for r in by_side.get("trl", [])}
    results = {"rounds": rounds, "trl_step_s": pooled.get("trl")}
    rows = []
    if "trl" in pooled:
        rows.append([side_label("trl", args), pooled["trl"], "", "", "", 1.0, 1.0])
    for side in sides:
        if side == "trl":
            continue
        phases = [m for r in by_side[side] for m in r["phases"]]
        entry = {key: statistics.median(m[key] for m in phases) for key in ("step_s", "rollout_s", "learner_s",
                                                                            "sync_s")}
        ratios = [r["median_s"] / trl_rounds[r["round"]] for r in by_side[side] if r["round"] in trl_rounds]
        entry.update(x_trl_pooled=entry["step_s"] / pooled["trl"] if "trl" in pooled else None,
                     x_trl_per_round=ratios, x_trl_paired=statistics.median(ratios) if ratios else None)
        results[f"raylab_{side}"] = entry
        rows.append([side_label(side, args), entry["step_s"], entry["rollout_s"], entry["learner_s"],
                     entry["sync_s"], entry["x_trl_pooled"] or "", entry["x_trl_paired"] or ""])
    return results, rows


def _params(model_dir: str) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(Path(model_dir) / "model.safetensors")).values())
