"""The easy/hard rule of a math dataset: a measure of each reference solution and two cut-offs.

    rule = SplitRule(measure="tokens", tokenizer="../shared/reference_models/sdar", easy_max=124, hard_min=145)
    rule.label("Natalia sold 48/2 = <<48/2=24>>24 clips ...\\n#### 72")     # -> "easy", "middle" or "hard"

Measures of GSM8K's `answer` field (the worked solution with its `#### N` line):
    steps    its non-empty lines before `#### N` (each GSM8K line is one reasoning step)
    chars    its characters
    tokens   its tokens under `tokenizer` (a local tokenizer folder or hub id, loaded once)
A question is easy when the measure is <= easy_max, hard when it is >= hard_min, and "middle" (in neither
subset) in between. The default (steps, 3, 4) has no middle band. The counts each rule gives on the real GSM8K
train split (7,473 questions) are in docs/grpo.md; the seed's 4,695 / 1,909 are matched by no two cut-offs on
these measures (see there for the closest rules and why).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict

LABELS = ("easy", "middle", "hard")


@dataclass(frozen=True)
class SplitRule:
    __pydantic_config__ = ConfigDict(extra="forbid")

    measure: Literal["steps", "chars", "tokens"] = "steps"
    easy_max: int = 3
    hard_min: int = 4
    tokenizer: str | None = None  # needed by the tokens measure

    def __post_init__(self):
        if self.measure not in ("steps", "chars", "tokens"):
            raise ValueError(f"measure: unknown measure {self.measure!r}; expected steps, chars or tokens")
        if self.easy_max >= self.hard_min:
            raise ValueError(f"easy_max: must be < hard_min, or the easy and hard bands overlap "
                             f"(got easy_max={self.easy_max} >= hard_min={self.hard_min})")
        if self.easy_max < 0:
            raise ValueError(f"easy_max: must be >= 0 (got {self.easy_max})")
        if self.measure == "tokens" and not self.tokenizer:
            raise ValueError("tokenizer: the tokens measure needs a tokenizer (a local folder or hub id)")

    def check_tokenizer(self, key: str) -> None:
        """Loads the tokenizer now (a one-line error naming `key`.tokenizer when it cannot be loaded)."""
        if self.measure == "tokens":
            _tokenizer(self.tokenizer, f"{key}.tokenizer")

    def measures(self, answers: list[str]) -> list[int]:
        """The measure of each answer field."""
        if self.measure == "steps":
            return [solution_steps(a.rpartition("####")[0] if "####" in a else a) for a in answers]
        if self.measure == "chars":
            return [len(a) for a in answers]
        tokenizer = _tokenizer(self.tokenizer, "tokenizer")
        return [len(ids) for ids in tokenizer(list(answers), add_special_tokens=False)["input_ids"]]

    def labels(self, answers: list[str]) -> list[str]:
        return [self.band(m) for m in self.measures(answers)]

    def label(self, answer: str) -> str:
        return self.labels([answer])[0]

    def band(self, measure: int) -> str:
        return "easy" if measure <= self.easy_max else "hard" if measure >= self.hard_min else "middle"


def solution_steps(solution: str) -> int:
    return sum(1 for line in solution.splitlines() if line.strip())


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str, key: str):
    from raylab.config import check_model_path

    check_model_path(name, key)
    from transformers import AutoTokenizer
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a folder that also holds a model of a custom type warns about it
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{key}: cannot load tokenizer {name!r} ({str(err).strip().splitlines()[0][:200]})") \
            from None
    finally:
        logging.set_verbosity(verbosity)
