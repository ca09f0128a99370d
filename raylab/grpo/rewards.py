"""Rewards for GRPO: a function of a batch, `reward(completions, examples) -> list[float]`, chosen by name.

    reward = resolve_reward("math_verify")        # GSM8K / MATH answers, checked by the math-verify package
    reward = resolve_reward("exact_match")        # synthetic tasks: stripped completion == example["answer"]
    reward = resolve_reward("mylab.rewards:score")  # any callable, by dotted path (or mylab.rewards.score)
    reward(["... so the answer is 42."], [{"answer": "42"}])  -> [1.0]

`math_verify` takes the completion's final answer (the last `\\boxed{...}`, else the text after the last `####`,
else after "answer is", else the last number), and the reference from `example["answer"]` (a GSM8K answer with
its `#### N` line is reduced to N). Decoration around a number is dropped the same way wherever the answer was
found: markdown emphasis (`**7**`), dollar signs (`$7`, `\\$7`), a trailing period, and words after the number
(`7 dollars`, `7 apples`). Plain numbers on both sides are compared exactly, as decimals (`7`, `7.0` and `7.00`
are equal; 192,000,001 is not 192,000,000: no tolerance), which is GSM8K's common case and costs microseconds;
anything else (fractions, radicals, intervals, LaTeX) goes to math-verify's parse and verify. Their
sympy work is bounded by math-verify's own timeout (`MATH_VERIFY_TIMEOUT_S`), which relies on SIGALRM and so only
works in a process's main thread (where Ray runs a synchronous actor's methods); called from another thread the
check runs without a timeout, kept cheap because only the short extracted answers are parsed, never the
whole completion. A check that times out or fails to parse scores 0.
"""
from __future__ import annotations

import functools
import importlib
import re
import threading
from decimal import Decimal
from typing import Callable

RewardFn = Callable[[list[str], list[dict]], list[float]]
MATH_VERIFY_TIMEOUT_S = 2
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
# a number that opens the answer and is followed by words or nothing (not by /, ^, digits or an operator)
LEADING_NUMBER = re.compile(r"(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))%?(?:\s+[A-Za-z][A-Za-z\s.]*)?\.?")
ANSWER_MARKER = re.compile(r"(?:####|answer is:?)[ \t]*([^\n]*\S)", re.IGNORECASE)
PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def exact_match(completions: list[str], examples: list[dict]) -> list[float]:
    """1.0 when the completion, stripped of surrounding whitespace, equals the example's answer."""
    return [float(c.strip() == str(ex["answer"]).strip()) for c, ex in zip(completions, examples)]


def math_verify(completions: list[str], examples: list[dict]) -> list[float]:
    """1.0 when the completion's final answer is mathematically equal to the reference answer."""
    return [float(answers_match(extract_answer(c), reference_answer(ex))) for c, ex in zip(completions, examples)]


REWARDS: dict[str, RewardFn] = {"exact_match": exact_match, "math_verify": math_verify}


def resolve_reward(name: str) -> RewardFn:
    """The reward registered as `name`, or the callable at the dotted path `package.module:function`."""
    if name in REWARDS:
        return _checked(name, REWARDS[name])
    module_name, sep, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward: unknown reward {name!r}; expected one of {sorted(REWARDS)} "
                         "or a dotted path package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward: cannot import module {module_name!r} for reward {name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward: {module_name!r} has no callable {attr!r} (reward {name!r})")
    return _checked(name, fn)


def _checked(name: str, fn: RewardFn) -> RewardFn:
    """Checks the batch sizes on the way in and out, so a user's reward that drops a value fails loudly."""

    @functools.wraps(fn)
    def reward(completions: list[str], examples: list[dict]) -> list[float]:
        if len(completions) != len(examples):
            raise ValueError(f"reward {name}: {len(completions)} completions but {len(examples)} examples")
        values = [float(v) for v in fn(list(completions), list(examples))]
        if len(values) != len(completions):
            raise ValueError(f"reward {name}: returned {len(values)} values for {len(completions)} completions")
        return values

    return reward


def reference_answer(example: dict) -> str:
    """The reference answer of an example; a raw GSM8K solution is reduced to the number after `####`."""
    if "answer" not in example:
        raise ValueError(f"reward math_verify: example has no 'answer' key (keys: {sorted(example)})")
    answer = str(example["answer"])
    return answer.rpartition("####")[2].strip() if "####" in answer else answer.strip()


def extract_answer(text: str) -> str | None:
    """The final answer of a completion: last \\boxed{...}, else after the last ####, else after "answer is",
    else the last number; None when there is none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return strip_decoration(boxed)
    marked = ANSWER_MARKER.findall(text)
    if marked:
        return strip_decoration(marked[-1])
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def strip_decoration(answer: str) -> str:
    """`**7**.` -> `7`, `\\$7` -> `7`, `7 dollars` -> `7`; an expression that is not a plain number followed by
    words (`\\frac{1}{2}`, `3/4`, `x = 2`) only loses its emphasis and trailing period."""
    cleaned = answer.replace("**", "").replace("\\$", "$").strip()
    cleaned = cleaned.rstrip(".").strip()
    bare = cleaned.strip("$").strip()
    lead = LEADING_NUMBER.fullmatch(bare)
    return lead.group(1) if lead else cleaned


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i].strip()
        i += 1
    return None  # unbalanced: the completion was cut off inside the box


def as_number(text: str) -> Decimal | None:
    """A plain number written as in GSM8K ("1,234", "$18", "-3.50", "12%"), exactly, or None."""
    cleaned = text.strip().strip("$").replace(",", "").rstrip(".%").strip()
    return Decimal(cleaned) if PLAIN_NUMBER.fullmatch(cleaned) else None


def answers_match(predicted: str | None, reference: str) -> bool:
    if predicted is None or not reference:
        return False
    pred_num, ref_num = as_number(predicted), as_number(reference)
    if pred_num is not None and ref_num is not None:
        return pred_num == ref_num  # exact: a relative tolerance would accept N + 1 for large N
    gold, target = _parse(reference), _parse(predicted)
    if not gold or not target:
        return False
    from math_verify import verify

    return bool(verify(list(gold), list(target), timeout_seconds=_timeout()))


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    """math-verify's parse of a bare answer, wrapped in $...$ so LaTeX is recognised; cached because a group's K
    completions share one reference and often repeat answers."""
    from math_verify import parse

    text = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    return tuple(parse(text, parsing_timeout=_timeout()))


def _timeout() -> int | None:
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
