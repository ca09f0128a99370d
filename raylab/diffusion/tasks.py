"""Synthetic tasks for the tiny MDLM: digit strings in, digit strings out. Pure torch.

    task = make_task("reverse", n_digits=6)
    prompt, answer = task.sample(batch=4, generator=torch.Generator().manual_seed(0))
    task.text(prompt[0]), task.text(answer[0])      # '314159=', '951413'

Tokens: the digits 0-9 are ids 0-9, '=' (end of prompt) is 10, the mask token is 11. The prompt is n random digits
and '='. Answers:
- sort: the same digits sorted. Every answer token follows from the prompt alone, so a trained model is almost
  equally sure of all of them, and which one is surest changes as tokens are revealed.
- reverse: the digits in reverse order. Each answer token depends on one prompt token only, so revealing
  answer tokens tells the model nothing new and barely moves its confidences: the order in which static
  decoding fills the answer is already visible from one state, the regime where FreeDave's drafts verify.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

SEPARATOR, MASK = 10, 11
VOCAB_SIZE = 12


@dataclass(frozen=True)
class DigitTask:
    """n random digits and '=' in, a function of the digits out: each task defines `answer(digits)`."""
    n_digits: int = 12

    def __post_init__(self):
        if self.n_digits < 1:
            raise ValueError(f"n_digits: must be >= 1, got {self.n_digits}")

    @property
    def prompt_length(self) -> int:
        return self.n_digits + 1

    @property
    def seq_length(self) -> int:
        return 2 * self.n_digits + 1

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompts (batch, n+1), answers (batch, n))."""
        digits = torch.randint(0, 10, (batch, self.n_digits), generator=generator)
        prompt = torch.cat([digits, torch.full((batch, 1), SEPARATOR)], dim=1)
        return prompt, self.answer(digits)

    def heldout(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An evaluation set from its own seed stream (disjoint from training draws with overwhelming odds)."""
        return self.sample(n, torch.Generator().manual_seed(10_000_019 + seed))

    @staticmethod
    def text(ids: torch.Tensor) -> str:
        return "".join("0123456789=?"[int(i)] for i in ids)


class SortTask(DigitTask):
    @staticmethod
    def answer(digits: torch.Tensor) -> torch.Tensor:
        return digits.sort(dim=1).values


class ReverseTask(DigitTask):
    @staticmethod
    def answer(digits: torch.Tensor) -> torch.Tensor:
        return digits.flip(dims=[1])


TASKS = {"sort": SortTask, "reverse": ReverseTask}


def make_task(name: str, n_digits: int) -> DigitTask:
    if name not in TASKS:
        raise ValueError(f"task: {name!r} is not one of {sorted(TASKS)}")
    return TASKS[name](n_digits)


def save_task(task: DigitTask, checkpoint: str | Path) -> None:
    """Records beside a checkpoint which task it was trained on (task.json)."""
    name = next(k for k, v in TASKS.items() if type(task) is v)
    (Path(checkpoint) / "task.json").write_text(json.dumps({"task": name, "n_digits": task.n_digits}) + "\n")


def load_task(checkpoint: str | Path) -> DigitTask:
    path = Path(checkpoint) / "task.json"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint}: no task.json (a checkpoint exported by the mdlm_train experiment)")
    spec = json.loads(path.read_text())
    return make_task(spec["task"], spec["n_digits"])
