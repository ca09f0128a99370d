"""Why the easy/hard study (experiments/grpo_easy_hard.yaml) reproduces the seed only in part: a per-question
profile of its arms, replayed in this process (no Ray) with the study's own policy, settings, lr and seeds.

    python -m raylab.grpo.easy_hard_profile                    # hard subset, sgd-std vs sgd-no-std, seeds 0-2
    python -m raylab.grpo.easy_hard_profile --subset easy --arms sgd-std,sgd-no-std --seeds 1
    python -m raylab.grpo.easy_hard_profile --no-std-lr-scale 2.3     # adds sgd-no-std at 2.3 x its lr

For each arm it prints, every `eval_every` steps of the study, the mean over seeds of: mean pi* (what the study's
table reports), the share of the subset's questions that are stuck (pi* < 0.05: a group of 8 answers then holds a
right one less than a third of the time) and solved (pi* > 0.9); over the steps since the previous row, the share
of sampled groups with zero reward variance (no gradient in either mode) and the std step scale, the mean of
1/sigma over the groups with variance (how much larger the std arm's step is than the no-std arm's at the same
lr: the seed's lr / sqrt(p(1 - p))). `--no-std-lr-scale X` adds the no-std SGD arm at X times its lr: with X near
the measured scale it asks whether std normalisation does more here than take a larger step. Each run takes a
few seconds on one core.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

from raylab.grpo.diagnostics import success_probs
from raylab.grpo.easy_hard import StudyRun

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "grpo_easy_hard.yaml"
STUCK, SOLVED = 0.05, 0.9
COLUMNS = ("accuracy", "stuck", "solved", "zero_var_groups", "std_scale")


def profile(run: StudyRun, steps: int, every: int) -> list[dict]:
    """A row at step 0 and every `every` steps of `run`, with the statistics the module docstring names."""
    rows, since = [], []
    for step in range(steps + 1):
        if step % every == 0:
            pi = success_probs(run.learner.model, run.tokenizer, run.questions)
            rows.append({"step": step, "accuracy": pi.mean().item(), "stuck": (pi < STUCK).float().mean().item(),
                         "solved": (pi > SOLVED).float().mean().item(),
                         "zero_var_groups": _mean([r["frac_zero_std"] for r in since]),
                         "std_scale": _mean([r["std_scale_mean"] for r in since])})
            since = []
        if step < steps:
            since += run.advance(step, 1, evaluate_every=0)
    return rows


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def main(argv: list[str]) -> int:
    from raylab.config import validate, yaml_load
    from raylab.experiments.grpo_easy_hard import questions

    p = argparse.ArgumentParser(prog="python -m raylab.grpo.easy_hard_profile", description=__doc__.split("\n")[0])
    p.add_argument("--subset", choices=["easy", "hard"], default="hard")
    p.add_argument("--arms", default="sgd-std,sgd-no-std", help="arm names of the study config")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the study's)")
    p.add_argument("--config", default=str(STUDY))
    p.add_argument("--no-std-lr-scale", type=float, default=None,
                   help="also run sgd-no-std at this multiple of its lr (arm sgd-no-std-lrxX)")
    args = p.parse_args(argv)
    cfg = validate(yaml_load(Path(args.config).read_text()), source=args.config)
    arms = {a.name: a for a in cfg.arms}
    names = [n for n in args.arms.split(",") if n]
    unknown = [n for n in names if n not in arms]
    if unknown:
        raise SystemExit(f"--arms: {unknown[0]!r} is not an arm of {args.config} ({sorted(arms)})")
    if args.no_std_lr_scale:
        base = arms["sgd-no-std"]
        scaled = dataclasses.replace(base, name=f"{base.name}-lrx{args.no_std_lr_scale:g}",
                                     lr=base.lr * args.no_std_lr_scale)
        arms[scaled.name] = scaled
        names.append(scaled.name)
    print(f"{args.subset} subset, {cfg.steps} steps of {cfg.settings.prompts_per_step} questions x "
          f"K={cfg.settings.num_generations}; stuck: pi* < {STUCK}, solved: pi* > {SOLVED}; mean over seeds")
    print("| arm | step | mean pi* | stuck | solved | zero-variance groups | std step scale 1/sigma |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        runs = [profile(StudyRun(cfg.policy, arms[name], questions(args.subset), cfg.settings, cfg.seed + seed),
                        cfg.steps, cfg.eval_every) for seed in range(args.seeds or cfg.seeds)]
        for i, row in enumerate(runs[0]):
            cells = [statistics.mean(r[i][c] for r in runs) for c in COLUMNS]
            print(f"| {name} | {row['step']} | " + " | ".join(f"{v:.3f}" for v in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
