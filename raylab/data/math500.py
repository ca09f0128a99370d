"""MATH500 loader: competition problems (`problem`, `answer`, optionally `solution` and `level` 1-5).

    examples = load_math500("data/math500.jsonl")                                # a local JSONL
    examples = load_math500("HuggingFaceH4/MATH-500", split="test", difficulty="hard")
    -> [{"prompt": "...\\boxed{}.", "answer": "\\frac{1}{2}", "solution": "...", "difficulty": "hard"}, ...]

The answer is kept as written (LaTeX); the `math_verify` reward compares it with a completion's final answer.
Difficulty comes from MATH's level: hard from `hard_min_level` (default 4) up, easy below, None without a level.
"""
from __future__ import annotations

from pathlib import Path

from raylab.data.records import prompt_template, read_records, require_keys, select

HARD_MIN_LEVEL = 4


def parse_level(level, where: str) -> int | None:
    """MATH writes levels as 3 or "Level 3"; "?" or a missing level is None."""
    if level is None:
        return None
    text = str(level).strip().removeprefix("Level").strip()
    if text in ("", "?"):
        return None
    if not text.isdigit():
        raise ValueError(f"{where}: level {level!r} is not a number or 'Level N'")
    return int(text)


def load_math500(source: str | Path, split: str = "test", template: str = "boxed", difficulty: str | None = None,
                 hard_min_level: int = HARD_MIN_LEVEL, limit: int | None = None) -> list[dict]:
    text = prompt_template(template)
    examples = []
    for i, record in enumerate(read_records(source, split)):
        where = f"{source} record {i}"
        require_keys(record, ("problem", "answer"), where, "MATH500")
        level = parse_level(record.get("level"), where)
        examples.append({
            "prompt": text.format(question=str(record["problem"]).strip()),
            "answer": str(record["answer"]).strip(),
            "solution": str(record.get("solution", "")).strip(),
            "difficulty": None if level is None else ("hard" if level >= hard_min_level else "easy"),
        })
    if difficulty is not None and any(ex["difficulty"] is None for ex in examples):
        raise ValueError(f"difficulty: {source} has records without a level, so it cannot be split easy/hard")
    return select(examples, difficulty, limit)
