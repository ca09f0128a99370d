"""`raylab bench freedave`: FreeDave vs static vs parallel decoding of the committed tiny MDLM, in one run.

    raylab bench freedave                                   # batch 1, 100 held-out problems, k = 8, one block
    raylab bench freedave --batch 16 --block-length 4 --draft-steps 4

For each method: tokens per NFE, wall-clock tokens/s (median over `--repeats` passes, the methods interleaved so
that a shared machine's load hits them alike), accuracy, and the exact-match rate against static decoding, then
the ratios against static. Targets from issue 3: FreeDave >= 3x tokens per NFE at 100% exact match and
>= 1.5x tokens/s at batch 1 on CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from raylab.diffusion import generate
from raylab.diffusion.model import TinyMDLM
from raylab.diffusion.tasks import MASK, load_task

METHODS = ("static", "parallel", "freedave")


def decode_all(model, prompts, batch: int, **kw) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(sequences, per-sequence NFE, seconds) for all prompts, `batch` at a time."""
    start, seqs, nfe = time.perf_counter(), [], []
    for i in range(0, len(prompts), batch):
        out = generate(model, prompts[i:i + batch], **kw)
        seqs.append(out.sequences)
        nfe.append(out.nfe)
    if prompts.is_cuda:
        torch.cuda.synchronize()
    return torch.cat(seqs), torch.cat(nfe), time.perf_counter() - start


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raylab bench freedave", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="assets/tiny_mdlm")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block-length", type=int, default=12)
    p.add_argument("--draft-steps", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = TinyMDLM.load(args.checkpoint).to(args.device)
    task = load_task(args.checkpoint)
    prompts, answers = (t.to(args.device) for t in task.heldout(args.samples, seed=1))
    kw = dict(gen_length=task.n_digits, block_length=args.block_length, draft_steps=args.draft_steps,
              threshold=args.threshold, mask_token_id=MASK)
    decode_all(model, prompts[:4], args.batch, method="static", **kw)  # warm-up
    seconds, outputs = {m: [] for m in METHODS}, {}
    for _ in range(args.repeats):
        for m in METHODS:
            seqs, nfe, s = decode_all(model, prompts, args.batch, method=m, **kw)
            seconds[m].append(s)
            outputs[m] = seqs, nfe  # decoding is deterministic: every repeat gives the same
    static = outputs["static"][0]
    tokens = task.n_digits * args.samples
    rows = {}
    for m in METHODS:
        seqs, nfe = outputs[m]
        rows[m] = dict(tpn=tokens / float(nfe.sum()), tps=tokens / statistics.median(seconds[m]),
                       acc=float((seqs[:, task.prompt_length:] == answers).all(dim=1).double().mean()),
                       exact=float((seqs == static).all(dim=1).double().mean()))
    print(f"tiny MDLM ({args.checkpoint}) on {args.device}, {args.samples} held-out {type(task).__name__} problems, "
          f"{task.n_digits} tokens each, batch {args.batch}, block {args.block_length}, k = {args.draft_steps}, "
          f"threshold {args.threshold}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'method':<10}{'tokens/NFE':>12}{'tokens/s':>12}{'accuracy':>10}{'exact vs static':>17}"
          f"{'NFE ratio':>11}{'time ratio':>12}")
    for m, r in rows.items():
        print(f"{m:<10}{r['tpn']:>12.2f}{r['tps']:>12.1f}{r['acc']:>10.3f}{r['exact']:>17.3f}"
              f"{r['tpn'] / rows['static']['tpn']:>10.2f}x{r['tps'] / rows['static']['tps']:>11.2f}x")
    fd, st = rows["freedave"], rows["static"]
    nfe_ok = fd["tpn"] / st["tpn"] >= 3 and fd["exact"] == 1.0
    time_ok = fd["tps"] / st["tps"] >= 1.5
    print(f"targets: tokens/NFE >= 3x at 100% exact match: {'met' if nfe_ok else 'NOT met'}; "
          f"tokens/s >= 1.5x: {'met' if time_ok else 'NOT met'}" + ("" if args.batch == 1 else " (set for batch 1)"))
    return 0
