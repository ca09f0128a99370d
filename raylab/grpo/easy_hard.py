"""One run of the seed's easy/hard study on a tiny LM (no Ray): GRPO with the torch rollout backend and the
learner in one process, on one subset of 1-digit addition questions, with the exact accuracy and, on demand,
the seed's diagnostics.

    run = StudyRun("assets/tiny_policy_easy_hard", arm=Arm("sgd-std", "std", "sgd", lr=0.5), questions=hard,
                   settings=StudySettings(), seed=0)
    rows = run.advance(start=0, steps=10)            # a metrics row per step
    state = run.state_dict()                         # the learner (weights, optimizer, schedule clock)

A step draws `prompts_per_step` questions (a fixed function of seed and step), samples K answers each with the
torch backend, scores them by exact match, turns the rewards into std or no-std group advantages, updates the
learner (SGD or AdamW, no gradient clipping by default so that an SGD step is exactly lr times the gradient),
and loads the new weights into the rollout model. Accuracy is exact: the mean over the subset's questions of
pi*_i, the probability of the right answer (`raylab.grpo.diagnostics.success_probs`), which is the expected
sampled accuracy, without sampling noise.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import ConfigDict

from raylab.grpo import diagnostics
from raylab.grpo.advantages import curvature_diagnostic, group_advantages
from raylab.grpo.learner import Learner
from raylab.grpo.optim import LearnerConfig
from raylab.grpo.rewards import exact_match
from raylab.grpo.rollout import SamplingConfig, make_rollout, pack_weights


@dataclass(frozen=True)
class Arm:
    """One arm of the study: an advantage mode and an optimizer with its step size."""
    __pydantic_config__ = ConfigDict(extra="forbid")

    name: str
    mode: Literal["std", "no_std"]
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.0


@dataclass(frozen=True)
class StudySettings:
    __pydantic_config__ = ConfigDict(extra="forbid")

    prompts_per_step: int = 16
    num_generations: int = 8
    max_new_tokens: int = 3
    temperature: float = 1.0
    max_grad_norm: float = 1e9  # no clipping: clipping would rescale the two modes' steps alike
    diagnostic_questions: int = 100  # how many questions the diagnostics look at (evenly spaced in the list)
    hvp_eps: float = 1e-2  # float32 weights: a smaller step mostly adds rounding noise

    def __post_init__(self):
        for name in ("prompts_per_step", "num_generations", "max_new_tokens", "diagnostic_questions"):
            if getattr(self, name) < (2 if name == "num_generations" else 1):
                raise ValueError(f"{name}: too small (got {getattr(self, name)})")
        if self.hvp_eps <= 0:
            raise ValueError(f"hvp_eps: must be > 0 (got {self.hvp_eps})")


class StudyRun:
    def __init__(self, policy: str, arm: Arm, questions: list[dict], settings: StudySettings, seed: int,
                 eval_questions: list[dict] | None = None, state: dict | None = None):
        import transformers

        torch.set_num_threads(1)  # one run per core; a tiny model gains nothing from more threads
        transformers.utils.logging.disable_progress_bar()  # a bar per model load would bury the run's output
        self.arm, self.questions, self.settings, self.seed = arm, questions, settings, seed
        self.eval_questions = eval_questions or questions
        self.sampling = SamplingConfig(settings.num_generations, settings.max_new_tokens, settings.temperature)
        self.rollout = make_rollout("torch", policy, seed=seed)
        self.tokenizer = self.rollout.tokenizer
        config = LearnerConfig(lr=arm.lr, optimizer=arm.optimizer, momentum=arm.momentum,
                               max_grad_norm=settings.max_grad_norm, micro_batch_size=1024, cpus=1)
        self.learner = Learner(policy, config, pad_token_id=self.tokenizer.pad_token_id,
                               max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                               seed=seed, device="cpu")
        if state is not None:
            self.learner.load_state_dict(state)
            self.rollout.load_weights(pack_weights(self.learner.export_weights()))

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def accuracy(self) -> float:
        return diagnostics.success_probs(self.learner.model, self.tokenizer, self.eval_questions).mean().item()

    def advance(self, start: int, steps: int, evaluate_every: int = 1, diagnose_every: int = 0) -> list[dict]:
        """Steps start..start+steps-1; row j holds step start+j+1's training statistics, `accuracy` after it
        on evaluation steps, and the diagnostics on diagnostic steps; the first row of a run also holds
        `accuracy_start`, the accuracy before any update."""
        rows = []
        initial = self.accuracy() if start == 0 and evaluate_every else None
        for step in range(start, start + steps):
            before = diagnostics.flat_parameters(self.learner.model) if diagnose_every else None
            row = self._train(step)
            done = step + 1
            if evaluate_every and done % evaluate_every == 0:
                row["accuracy"] = self.accuracy()
            if diagnose_every and done % diagnose_every == 0:
                row.update(self.diagnose(diagnostics.flat_parameters(self.learner.model) - before))
            rows.append(row)
        if initial is not None and rows:
            rows[0]["accuracy_start"] = initial  # before any update
        return rows

    def _train(self, step: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + step)
        examples = [self.questions[rng.randrange(len(self.questions))] for _ in range(self.settings.prompts_per_step)]
        completions = self.rollout.generate([e["prompt"] for e in examples], self.sampling, seed=step)
        k = self.settings.num_generations
        rewards = torch.tensor(exact_match([c.text for c in completions],
                                           [examples[c.prompt_index] for c in completions])).view(-1, k)
        advantages = group_advantages(rewards, self.arm.mode).flatten()
        stats = self.learner.train_step([c.prompt_ids for c in completions], [c.completion_ids for c in completions],
                                        advantages.tolist(), [c.logprobs for c in completions])
        self.rollout.load_weights(pack_weights(self.learner.export_weights()))
        return {"reward_mean": rewards.mean().item(), "frac_zero_std": (rewards.std(dim=1) == 0).float().mean().item(),
                # mean 1/sigma over the groups with variance: how much larger the std step is than the no-std one
                "std_scale_mean": curvature_diagnostic(rewards, 1.0, "std")["effective_lr_mean"],
                "grad_norm": stats["grad_norm"], "entropy": stats["entropy"],
                "logprob_gap_max": stats["logprob_gap_max"]}

    def diagnose(self, update: torch.Tensor) -> dict:
        """The seed's diagnostics at the current weights, on `diagnostic_questions` of the questions: each
        one's pi* and reward variance, the curvature ||Hess J_i u|| along this step's update u, and the pairwise
        |cos| of the questions' gradients (summarised, and as 101 quantiles for the inverse-CDF figure)."""
        stride = max(1, len(self.questions) // self.settings.diagnostic_questions)  # spread over the question list
        questions = self.questions[::stride][: self.settings.diagnostic_questions]
        model = self.learner.model
        probs = diagnostics.success_probs(model, self.tokenizer, questions)
        curvature = diagnostics.curvature_along(model, self.tokenizer, questions, update, self.settings.hvp_eps)
        cosines = diagnostics.pairwise_abs_cosines(diagnostics.question_gradients(model, self.tokenizer, questions))
        return {"diag_pi": probs.tolist(), "diag_variance": (probs * (1 - probs)).tolist(),
                "diag_curvature": curvature.tolist(), "diag_cos_mean": cosines.mean().item(),
                "diag_cos_std": cosines.std().item(), "diag_cos_below_0.15": (cosines < 0.15).float().mean().item(),
                "diag_cos_quantiles": torch.quantile(cosines, torch.linspace(0, 1, 101)).tolist()}
