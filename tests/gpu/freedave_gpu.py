"""FreeDave on a CUDA GPU: a prepared check, run by hand where a GPU exists (not part of the CPU test suite).

    python tests/gpu/freedave_gpu.py [OUT_DIR]          # a few minutes on one H100
    RAYLAB_DIFFUSION_CHECKPOINTS=/models/TraDo-4B-Instruct,/models/LLaDA-8B-Instruct python tests/gpu/freedave_gpu.py

1. `raylab bench freedave --device cuda --batch 1,4,16` on the tiny MDLM and a random native model of each
   architecture, then on each real checkpoint listed in RAYLAB_DIFFUSION_CHECKPOINTS (local directories; weights
   are never downloaded here): tokens/NFE, tokens/s and exact match vs static per batch size.
2. A random 12-layer, d=1024 TinyMDLM (~220M parameters) with a 256-token answer, where a forward pass costs
   real GPU time: static vs FreeDave (k = 4, 8) NFE and wall clock at batch 1, block-causal with and without the
   prefix cache (outputs compared). A random model's confidences are low, so few drafts verify: this part
   measures the cost of verifying k drafts per forward, not the gain on a trained model.
Writes results.json (and the bench output) to OUT_DIR (default $OUT or the current directory).
"""
import contextlib
import io
import json
import os
import sys
import time

import torch

from raylab.bench.freedave import main as bench
from raylab.diffusion import generate
from raylab.diffusion.model import TinyMDLM, TinyMDLMConfig


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    results = {"device": torch.cuda.get_device_name()}
    real = [p for p in os.environ.get("RAYLAB_DIFFUSION_CHECKPOINTS", "").split(",") if p]
    for models in ["tiny,llada,dream,sdar", *real]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            bench(["--device", "cuda", "--batch", "1,4,16", "--samples", "64", "--repeats", "3", "--model", models,
                   "--output-dir", out_dir])
        results[f"bench {models}"] = buf.getvalue()
        print(buf.getvalue())

    torch.manual_seed(0)
    cfg = TinyMDLMConfig(vocab_size=32000, mask_token_id=31999, max_length=512, d_model=1024, n_layers=12,
                         n_heads=16)
    model = TinyMDLM(cfg).cuda().to(torch.bfloat16).eval()
    prompt = torch.randint(0, 31999, (1, 128), device="cuda")
    kw = dict(gen_length=256, block_length=32, mask_token_id=31999)
    generate(model, prompt, method="static", **{**kw, "gen_length": 32})  # warm-up
    runs = {}
    for name, extra in [("static", dict(method="static")), ("freedave_k4", dict(method="freedave", draft_steps=4)),
                        ("freedave_k8", dict(method="freedave", draft_steps=8)),
                        ("static_block_causal", dict(method="static", attention="block_causal")),
                        ("static_block_causal_cache", dict(method="static", attention="block_causal",
                                                           use_cache=True))]:
        res, seconds = timed(lambda: generate(model, prompt, **kw, **extra))
        runs[name] = {"nfe": int(res.nfe[0]), "seconds": seconds, "tokens_per_s": 256 / seconds,
                      "sequence": res.sequences[0].tolist()}
        print(name, runs[name]["nfe"], f"{seconds:.2f}s")
    results["random_220m"] = {k: {kk: v for kk, v in r.items() if kk != "sequence"} for k, r in runs.items()}
    results["random_220m_freedave_equals_static"] = {
        k: runs[k]["sequence"] == runs["static"]["sequence"] for k in ("freedave_k4", "freedave_k8")}
    results["random_220m_cache_equals_no_cache"] = (
        runs["static_block_causal_cache"]["sequence"] == runs["static_block_causal"]["sequence"])
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps({k: v for k, v in results.items() if not k.startswith("bench ")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
