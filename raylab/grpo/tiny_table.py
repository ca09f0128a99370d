"""The grpo_tiny results table (README and docs/grpo.md) from finished `raylab run experiments/grpo_tiny.yaml` run
directories: greedy accuracy at step 0, step 10 and the end, and the sampled reward of the first and last 5 steps.

    for S in 0 1; do for B in true false; do
      RAY_worker_niceness=0 raylab run experiments/grpo_tiny.yaml seed=$S algorithm.norm_adv_by_std_in_grpo=$B \
          output_dir=/tmp/grpo_tiny_table progress=false
    done; done                                                  # about a minute each on 2 quiet cores
    python -m raylab.grpo.tiny_table /tmp/grpo_tiny_table/grpo_tiny-*
"""
from __future__ import annotations

import sys
from pathlib import Path

from raylab.config import yaml_load
from raylab.results import read_jsonl


def table_row(run_dir: Path) -> tuple[tuple, str]:
    """(sort key, markdown row) of one run directory."""
    cfg = yaml_load((run_dir / "config.yaml").read_text())
    rows = read_jsonl(run_dir / "metrics.jsonl")
    greedy = {r["step"]: r["eval_accuracy"] for r in rows if "eval_accuracy" in r}
    rewards = [r["reward_mean"] for r in rows if "reward_mean" in r]
    std = cfg["algorithm"]["norm_adv_by_std_in_grpo"] and cfg["algorithm"]["adv_estimator"] == "grpo"
    at10 = f"{greedy[10]:.3f}" if 10 in greedy else "-"
    first, last = sum(rewards[:5]) / len(rewards[:5]), sum(rewards[-5:]) / len(rewards[-5:])
    row = (f"| {cfg['seed']} | {'std' if std else 'no-std'} | {greedy[0]:.3f} | {at10} | {greedy[max(greedy)]:.3f} "
           f"| {first:.2f} -> {last:.2f} |")
    return (cfg["seed"], not std), row


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python -m raylab.grpo.tiny_table RUN_DIR [RUN_DIR ...]")
    missing = [d for d in argv if not (Path(d) / "metrics.jsonl").is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: not a finished run directory (no metrics.jsonl)")
    print("| seed | advantages | step 0 | step 10 | end | sampled reward, first 5 -> last 5 steps |")
    print("|---|---|---|---|---|---|")
    for _, row in sorted(table_row(Path(d)) for d in argv):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
