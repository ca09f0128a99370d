"""Synthetic arithmetic questions with controllable difficulty, in the example format of the GRPO loaders.

    make_arithmetic(1000, digits=2, terms=2, ops="+", seed=0)
    -> [{"prompt": "37+45=", "answer": "82", "difficulty": 2}, ...]

Difficulty grows with the number of digits per operand and the number of terms; `ops` picks from `+ - *`.
Answers are exact integers, so the `exact_match` reward checks them. The prompt is the bare expression with a
trailing `=`, which suits the character-level tiny policy (`raylab.grpo.policy`).
"""
from __future__ import annotations

import random

OPERATORS = "+-*"


def make_arithmetic(n: int, digits: int = 2, terms: int = 2, ops: str = "+", seed: int = 0) -> list[dict]:
    """`n` questions of `terms` operands with up to `digits` digits each, drawn with a fixed seed."""
    if n < 1:
        raise ValueError(f"n: need at least one question (got {n})")
    if digits < 1 or terms < 2:
        raise ValueError(f"digits must be >= 1 and terms >= 2 (got digits={digits}, terms={terms})")
    if not ops or any(op not in OPERATORS for op in ops):
        raise ValueError(f"ops: expected a non-empty string of {OPERATORS!r} (got {ops!r})")
    rng = random.Random(seed)
    top = 10 ** digits - 1
    examples = []
    for _ in range(n):
        nums = [rng.randint(0, top) for _ in range(terms)]
        chosen = [rng.choice(ops) for _ in range(terms - 1)]
        expr = str(nums[0]) + "".join(op + str(x) for op, x in zip(chosen, nums[1:]))
        # eval of digits and + - * only: the expression is built above, never read from outside
        examples.append({"prompt": expr + "=", "answer": str(eval(expr)), "difficulty": digits * (terms - 1)})
    return examples


def has_carry(a: int, b: int) -> bool:
    """Whether written addition of a + b carries in some column."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


def carry_questions(digits: int = 1) -> list[dict]:
    """Every addition a + b of operands with up to `digits` digits, labelled by carry: "hard" when written
    addition carries (7+8=15), "easy" when it does not (3+4=7). digits=1: 100 questions, 45 hard and 55 easy."""
    top = 10 ** digits
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b), "difficulty": "hard" if has_carry(a, b) else "easy"}
            for a in range(top) for b in range(top)]
