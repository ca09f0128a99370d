"""GPU checks of the GRPO system, prepared to run on a CUDA host (not run on the CPU build machines).

    bash ../shared/gpu/make_wheels.sh                  # Ray, TRL, datasets wheels for the offline GPU host
    python tests/gpu/grpo_gpu.py                       # prints one line per check, exits 1 if one fails

1. The learner on CUDA with bf16 autocast and LoRA: one update moves the weights, the merged export loads into a
   plain model whose log-probs match the learner's (bf16 tolerance).
2. An hf rollout worker on the GPU as a Ray actor, synced from a learner actor on the same GPU (fractional GPUs).
3. With vLLM installed: adapter-only LoRA sync (`rollout.lora_sync: adapter`) to a LoRA-enabled vLLM engine on
   the GPU (bf16): after two updates and two syncs, the engine's log-probs of a fixed completion match the
   learner's (bf16 tolerance), so the second adapter replaced the first.
4. The step-time comparison of `raylab bench grpo` at the GPU reference setting: a 27M-parameter random Llama,
   16 prompts x 4 completions (64) of at most 64 tokens; target <= 0.5x TRL's s/step. vLLM is used for the
   throughput line only if it is installed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def check_learner_bf16_lora(model_dir: str) -> str:
    from raylab.grpo.learner import Learner
    from raylab.grpo.optim import LearnerConfig, LoraConfig
    from raylab.grpo.policy import load_policy, pad_sequences, token_logprobs

    learner = Learner(model_dir, LearnerConfig(lr=1e-2, bf16=True, lora=LoraConfig(rank=8, alpha=16)),
                      device="cuda")
    prompts, completions = [[4, 5, 75], [6, 7, 83]], [[10, 1], [11, 12, 1]]
    learner.train_step(prompts, completions, [1.0, -1.0])
    plain = load_policy(model_dir).cuda()
    plain.load_state_dict({k: v.cuda() for k, v in learner.export_weights().items()})
    ids, attn, mask = pad_sequences(prompts, completions, 0)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = (token_logprobs(plain, ids.cuda(), attn.cuda()) * mask.cuda()).cpu()
    got, _ = learner.logprobs(prompts, completions)
    gap = (got - expected).abs().max().item()
    assert gap < 5e-2, gap
    return f"learner bf16 + LoRA on CUDA: merged export matches, max log-prob gap {gap:.2e}"


def check_actor_sync(model_dir: str) -> str:
    import ray

    from raylab.grpo.actors import build_learner, build_rollout_workers
    from raylab.grpo.optim import LearnerConfig
    from raylab.grpo.rollout import SamplingConfig

    ray.init(num_gpus=1, include_dashboard=False)
    try:
        learner = build_learner(model_dir, LearnerConfig(lr=5e-2, bf16=False, gpus=0.5))
        [worker] = build_rollout_workers(1, "hf", model_dir, SamplingConfig(4, 16), cpus=1, gpus=0.5,
                                         options=dict(device="cuda"))
        ray.get(learner.train_step.remote([[4, 5, 75]], [[10, 11, 1]], [1.0]))
        ray.get(worker.load_weights.remote(learner.export_weights.remote()))
        got = ray.get(worker.score.remote([5, 6, 75], [8, 4, 1]))
        want = ray.get(learner.logprobs.remote([[5, 6, 75]], [[8, 4, 1]]))[0]
        gap = max(abs(a - b) for a, b in zip(got, want))
        assert gap < 1e-3, gap
        return f"hf worker on GPU synced from learner actor: max log-prob gap {gap:.2e}"
    finally:
        ray.shutdown()


def check_vllm_adapter_sync(model_dir: str) -> str:
    from raylab.grpo.learner import Learner
    from raylab.grpo.optim import LearnerConfig, LoraConfig
    from raylab.grpo.rollout.vllm import VLLMRollout

    learner = Learner(model_dir, LearnerConfig(lr=5e-2, bf16=False, lora=LoraConfig(rank=8, alpha=16)),
                      device="cuda")
    engine = VLLMRollout(model_dir, gpu_memory_utilization=0.2, max_model_len=64, dtype="bfloat16", lora_rank=8)
    prompt, completion = [5, 6, 75], [8, 4, 1]
    gaps = []
    for sign in (1.0, -1.0):
        learner.train_step([[4, 5, 75], [6, 7, 83]], [[10, 1], [11, 12, 1]], [sign, -sign])
        engine.load_adapter(learner.export_adapter())
        want = learner.logprobs([prompt], [completion])[0][0, len(prompt):].tolist()
        got = engine.score(prompt, completion)
        gaps.append(max(abs(a - b) for a, b in zip(got, want)))
    assert max(gaps) < 5e-2, gaps
    return f"vLLM adapter-only LoRA sync on CUDA: max log-prob gap per sync {', '.join(f'{g:.2e}' for g in gaps)}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-bench", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    from raylab.grpo.policy import build_char_tokenizer, build_tiny_model

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "tiny")
        tok = build_char_tokenizer()
        build_tiny_model(tok).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        checks = [check_learner_bf16_lora, check_actor_sync] + ([check_vllm_adapter_sync] if _has("vllm") else [])
        for check in checks:
            try:
                print("ok  ", check(model_dir), flush=True)
            except Exception as err:  # report every check, then fail
                failed += 1
                print("FAIL", check.__name__, f"{type(err).__name__}: {err}", flush=True)
    if not args.skip_bench:
        from raylab.bench.grpo import main as bench

        backends = "hf,torch,vllm" if _has("vllm") else "hf,torch"
        bench(["--prompts", "16", "--k", "4", "--max-new-tokens", "64", "--steps", "8", "--rounds", "3",
               "--backends", backends, "--model-size", "27m", "--device", "cuda"])
    return 1 if failed else 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
