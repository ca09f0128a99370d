"""Rollout workers and the learner as Ray actors: after a weight sync, the rollout backend's log-probs of a fixed
completion equal the learner's (hf and torch with full fine-tuning), and a NaN loss in the learner actor reaches
the driver as one line. vLLM's syncs (LoRA merged and adapter-only) are tested in test_lora_sync.py."""
import pytest
import ray

from raylab.grpo.actors import build_learner, build_rollout_workers
from raylab.grpo.learner import NonFiniteLossError
from raylab.grpo.optim import LearnerConfig
from raylab.grpo.rollout import SamplingConfig
from raylab.grpo.trainer import unwrap_errors

PROMPTS = [[4, 5, 75], [6, 7, 83], [8, 9, 75], [5, 5, 83]]
COMPLETIONS = [[10, 1], [11, 12, 1], [13], [14, 15, 16, 1]]
FIXED_PROMPT, FIXED_COMPLETION = [5, 6, 75, 7, 83], [8, 4, 1]
SAMPLING = SamplingConfig(num_generations=4, max_new_tokens=6)

pytestmark = pytest.mark.ray


def learner_logprobs(learner, prompt, completion):
    return ray.get(learner.logprobs.remote([prompt], [completion]))[0]


def sync_proof(learner, worker):
    """Train (weights move), check the worker is stale, sync, check it now agrees with the learner."""
    before = ray.get(worker.score.remote(FIXED_PROMPT, FIXED_COMPLETION))
    unwrap_errors(learner.train_step.remote(PROMPTS, COMPLETIONS, [1.0, -1.0, 1.0, -1.0]))
    trained = learner_logprobs(learner, FIXED_PROMPT, FIXED_COMPLETION)
    assert max(abs(a - b) for a, b in zip(before, trained)) > 1e-3, "the update should move the log-probs"
    ray.get(worker.load_weights.remote(learner.export_weights.remote()))
    after = ray.get(worker.score.remote(FIXED_PROMPT, FIXED_COMPLETION))
    assert after == pytest.approx(trained, abs=2e-4)
    # the sampling log-probs the worker reports match the learner's recomputation (the logged gap metric)
    completions = ray.get(worker.generate.remote(["12+34="], seed=3))
    for c in completions:
        assert c.logprobs == pytest.approx(learner_logprobs(learner, c.prompt_ids, c.completion_ids), abs=2e-4)


@pytest.mark.parametrize("backend", ["hf", "torch"])
def test_worker_gets_full_weights(ray_local, tiny_model_dir, backend):
    learner = build_learner(tiny_model_dir, LearnerConfig(lr=5e-2))
    [worker] = build_rollout_workers(1, backend, tiny_model_dir, SAMPLING, cpus=1)
    try:
        sync_proof(learner, worker)
    finally:
        ray.kill(worker)
        ray.kill(learner)


def test_nan_loss_in_the_learner_actor_is_one_line(ray_local, tiny_model_dir):
    learner = build_learner(tiny_model_dir, LearnerConfig(lr=1e-2))
    try:
        with pytest.raises(NonFiniteLossError, match="loss is nan") as err:
            unwrap_errors(learner.train_step.remote(PROMPTS, COMPLETIONS, [float("nan")] * 4))
        assert "\n" not in str(err.value)
    finally:
        ray.kill(learner)
