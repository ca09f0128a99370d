"""Demo: the committed tiny MDLM answers one held-out problem by static and by FreeDave decoding, forward by forward.

    python -m raylab.diffusion.demo [--checkpoint assets/tiny_mdlm] [--draft-steps 8] [--block-length 12] [--seed 0]

Each line is the answer after one forward pass ('_' is still masked), as in the FreeDave paper's figure: static
fixes one token per forward, FreeDave the same tokens in the same order, several per forward.
"""
from __future__ import annotations

import argparse

import torch

from raylab.diffusion import generate
from raylab.diffusion.model import TinyMDLM
from raylab.diffusion.tasks import MASK, load_task


def trace(task, result) -> list[str]:
    """The answer as known after forward 1, 2, ... (from each token's decode step)."""
    answer, step = result.sequences[0, task.prompt_length:], result.decode_step[0]
    return ["".join(task.text(answer[i:i + 1]) if step[i] <= n else "_" for i in range(len(answer)))
            for n in range(1, int(result.nfe[0]) + 1)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raylab.diffusion.demo", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="assets/tiny_mdlm")
    p.add_argument("--draft-steps", type=int, default=8)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, task = TinyMDLM.load(args.checkpoint), load_task(args.checkpoint)
    prompt, answer = task.heldout(1, seed=args.seed)
    kw = dict(gen_length=task.n_digits, block_length=args.block_length, mask_token_id=MASK)
    results = {m: generate(model, prompt, method=m, draft_steps=args.draft_steps, **kw) for m in ("static", "freedave")}
    print(f"prompt {task.text(prompt[0])}   expected {task.text(answer[0])}")
    for method, result in results.items():
        print(f"\n{method}: {int(result.nfe[0])} forward passes")
        for n, line in enumerate(trace(task, result), 1):
            print(f"  forward {n:>2}: {line}")
    same = torch.equal(results["static"].sequences, results["freedave"].sequences)
    print(f"\nFreeDave output {'equals' if same else 'DIFFERS FROM'} static output")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
