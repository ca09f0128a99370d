"""GSM8K loader: grade-school math word problems with a worked solution ending in `#### N`, split easy/hard.

    examples = load_gsm8k("../shared/data/gsm8k/train.jsonl")              # a local JSONL in GSM8K's format
    examples = load_gsm8k("openai/gsm8k", split="train", difficulty="hard")   # the Hugging Face dataset
    examples = load_gsm8k(path, rule=SplitRule(measure="chars", easy_max=303, hard_min=358))
    -> [{"prompt": "Question: ...\\nAnswer:", "answer": "18", "solution": "...", "difficulty": "easy"}, ...]

Difficulty, as in the seed (GSM8K train split into easy and hard "by solution complexity"), comes from a
`raylab.data.split.SplitRule` on the answer field: by default its number of reasoning steps (easy up to 3,
hard from 4, which gives 4,110 / 3,363 on the real train split); a rule with a gap between its cut-offs labels
the questions in between "middle", in neither subset. docs/grpo.md lists the counts of the rules tried.
"""
from __future__ import annotations

from pathlib import Path

from raylab.data.records import prompt_template, read_records, require_keys, select
from raylab.data.split import SplitRule


def parse_solution(answer: str, where: str = "record") -> tuple[str, str]:
    """GSM8K's answer field -> (worked solution, final answer); commas are dropped from the number (1,000 -> 1000)."""
    solution, marker, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    if not marker or not final:
        raise ValueError(f"{where}: answer has no final '#### N' line (GSM8K format)")
    return solution.strip(), final


def load_gsm8k(source: str | Path, split: str = "train", template: str = "qa", difficulty: str | None = None,
               rule: SplitRule = SplitRule(), limit: int | None = None, config: str = "main") -> list[dict]:
    """GSM8K examples from a JSONL file, a local dataset directory/file, or a hub id (config "main")."""
    text = prompt_template(template)
    records = read_records(source, split, config)
    examples = []
    for i, record in enumerate(records):
        where = f"{source} record {i}"
        require_keys(record, ("question", "answer"), where, "GSM8K")
        solution, final = parse_solution(str(record["answer"]), where)
        examples.append({"prompt": text.format(question=str(record["question"]).strip()), "answer": final,
                         "solution": solution})
    for example, label in zip(examples, rule.labels([str(r["answer"]) for r in records])):
        example["difficulty"] = label
    return select(examples, difficulty, limit)


def split_counts(source: str | Path, rule: SplitRule, split: str = "train") -> dict[str, int]:
    """How many questions of `split` fall in each band of `rule`."""
    labels = rule.labels([str(r["answer"]) for r in read_records(source, split, "main")])
    return {band: labels.count(band) for band in ("easy", "middle", "hard")}
