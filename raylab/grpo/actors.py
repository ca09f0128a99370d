"""Ray actors of GRPO: thin wrappers that hold a rollout backend or a learner; the work is in the cores.

    workers = build_rollout_workers(2, "hf", "assets/tiny_policy", sampling, cpus=1)
    learner = build_learner("assets/tiny_policy", LearnerConfig(lr=1e-4, cpus=1))
    weights = learner.export_weights.remote()                   # one object in the store
    ray.get([w.load_weights.remote(weights) for w in workers])      # every worker gets the new weights

`ray.remote(...)` is applied here, with the CPUs and GPUs the config asks for.
"""
from __future__ import annotations

import ray
import torch
import transformers

from raylab.grpo.learner import Learner
from raylab.grpo.optim import LearnerConfig
from raylab.grpo.rollout import SamplingConfig, make_rollout, pack_weights, packed_bytes

# Idle OpenMP threads sleep instead of spinning: the rollout workers and the learner take turns on the same cores,
# and a phase's threads spinning on after it ended would fight the next phase's (and anything else on the machine)
ACTOR_ENV = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}


def _setup_actor(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS for an actor; torch's intra-op pool must match so actors do not oversubscribe
    torch.set_num_threads(max(1, int(cpus)))
    # the weight-loading progress bars of every actor would bury the run's own output
    transformers.utils.logging.disable_progress_bar()


class RolloutWorker:
    """One rollout engine (hf, torch or vllm) and its default sampling settings."""

    def __init__(self, backend: str, model: str, sampling: SamplingConfig, seed: int, cpus: float,
                 options: dict | None = None):
        _setup_actor(cpus)
        self.backend = make_rollout(backend, model, seed=seed, **(options or {}))
        self.sampling = sampling

    def generate(self, prompts: list[str], seed: int, sampling: SamplingConfig | None = None):
        return self.backend.generate(prompts, sampling or self.sampling, seed)

    def load_weights(self, packed: dict) -> int:
        """Full weights (LoRA merged); returns the bytes this sync moved."""
        self.backend.load_weights(packed)
        return packed_bytes(packed)

    def load_adapter(self, files: dict[str, bytes]) -> int:
        """A peft adapter folder's files (vllm backend, built with lora_rank); returns the bytes this sync moved."""
        if not hasattr(self.backend, "load_adapter"):
            raise ValueError("rollout.lora_sync: adapter needs rollout.backend=vllm "
                             f"(got {type(self.backend).__name__})")
        self.backend.load_adapter(files)
        return sum(len(data) for data in files.values())

    def score(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        return self.backend.score(prompt_ids, completion_ids, self.sampling.temperature)


class LearnerWorker:
    """The learner's model, optimizer and reference model, living in one actor (on a GPU when given one)."""

    def __init__(self, model: str, config: LearnerConfig, threads: float, options: dict):
        _setup_actor(threads)
        self.learner = Learner(model, config, **options)

    def train_step(self, prompt_ids, completion_ids, advantages, rollout_logprobs=None, loss_rows=None) -> dict:
        return self.learner.train_step(prompt_ids, completion_ids, advantages, rollout_logprobs, loss_rows)

    def sequence_kl(self, prompt_ids, completion_ids) -> list[float]:
        return self.learner.sequence_kl(prompt_ids, completion_ids)

    def logprobs(self, prompt_ids, completion_ids) -> list[list[float]]:
        logp, mask = self.learner.logprobs(prompt_ids, completion_ids)
        return [row[m.bool()].tolist() for row, m in zip(logp, mask)]

    def export_weights(self) -> dict:
        return pack_weights(self.learner.export_weights())

    def export_adapter(self) -> dict[str, bytes]:
        return self.learner.export_adapter()

    def save_pretrained(self, path: str) -> None:
        self.learner.save_pretrained(path)

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)


def build_rollout_workers(count: int, backend: str, model: str, sampling: SamplingConfig, *, cpus: float,
                          gpus: float = 0.0, seed: int = 0, options: dict | None = None,
                          threads: int | None = None) -> list:
    """`count` rollout actors, each with its own seed offset so their samples differ. `threads`: torch threads
    per actor (default: its CPUs)."""
    cls = ray.remote(num_cpus=cpus, num_gpus=gpus, runtime_env=ACTOR_ENV)(RolloutWorker)
    return [cls.remote(backend, model, sampling, seed + 7919 * (i + 1), threads or max(cpus, 1), options)
            for i in range(count)]


def build_learner(model: str, config: LearnerConfig, *, cpus: float | None = None, options: dict | None = None):
    """The learner actor with the CPUs and GPUs of `config` (`cpus` overrides the CPUs Ray reserves, as inside a
    Tune trial, not its threads); `options` are the loss keywords of `Learner`."""
    actor = ray.remote(num_cpus=config.cpus if cpus is None else cpus, num_gpus=config.gpus,
                       runtime_env=ACTOR_ENV)(LearnerWorker)
    return actor.remote(model, config, config.threads or max(config.cpus, 1), options or {})
