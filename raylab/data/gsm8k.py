"""GSM8K loader: grade-school math word problems with a worked solution ending in `#### N`, split easy/hard.

    examples = load_gsm8k("data/gsm8k_train.jsonl")                        # a local JSONL in GSM8K's format
    examples = load_gsm8k("openai/gsm8k", split="train", difficulty="hard")   # the Hugging Face dataset
    -> [{"prompt": "Question: ...\\nAnswer:", "answer": "18", "solution": "...", "difficulty": "easy"}, ...]

Difficulty, as in the seed (GSM8K train split into easy and hard "by solution complexity"), is the number of
reasoning steps of the reference solution: its non-empty lines before the `#### N` line (each GSM8K line is one
step, usually one <<calculation>>). A question is hard when it takes at least `hard_min_steps` steps (default 4).
The seed reports 4,695 easy and 1,909 hard training questions without giving its rule; the dataset is not
available offline here, so whether this default reproduces those counts is not verified; adjust
`hard_min_steps` to match.
"""
from __future__ import annotations

from pathlib import Path

from raylab.data.records import prompt_template, read_records, require_keys, select

HARD_MIN_STEPS = 4


def parse_solution(answer: str, where: str = "record") -> tuple[str, str]:
    """GSM8K's answer field -> (worked solution, final answer); commas are dropped from the number (1,000 -> 1000)."""
    solution, marker, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    if not marker or not final:
        raise ValueError(f"{where}: answer has no final '#### N' line (GSM8K format)")
    return solution.strip(), final


def solution_steps(solution: str) -> int:
    return sum(1 for line in solution.splitlines() if line.strip())


def load_gsm8k(source: str | Path, split: str = "train", template: str = "qa", difficulty: str | None = None,
               hard_min_steps: int = HARD_MIN_STEPS, limit: int | None = None, config: str = "main") -> list[dict]:
    """GSM8K examples from a JSONL file, a local dataset directory/file, or a hub id (config "main")."""
    if hard_min_steps < 1:
        raise ValueError(f"hard_min_steps: expected a positive number of steps, got {hard_min_steps}")
    text = prompt_template(template)
    examples = []
    for i, record in enumerate(read_records(source, split, config)):
        where = f"{source} record {i}"
        require_keys(record, ("question", "answer"), where, "GSM8K")
        solution, final = parse_solution(str(record["answer"]), where)
        examples.append({
            "prompt": text.format(question=str(record["question"]).strip()),
            "answer": final,
            "solution": solution,
            "difficulty": "hard" if solution_steps(solution) >= hard_min_steps else "easy",
        })
    return select(examples, difficulty, limit)
