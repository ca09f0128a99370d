"""GSM8K and MATH500 loaders on the shipped sample (tests/data/gsm8k_sample.jsonl, 20 problems in GSM8K's format),
on a parquet file and a dataset directory read through `datasets.load_dataset`, and their one-line errors."""
import json
from pathlib import Path

import pytest

from raylab.data.gsm8k import load_gsm8k, parse_solution
from raylab.data.math500 import load_math500
from raylab.data.split import SplitRule, solution_steps

SAMPLE = Path(__file__).parent / "gsm8k_sample.jsonl"
MATH_RECORDS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "answer": "\\frac{3}{4}", "solution": "...", "level": 1},
    {"problem": "Solve $x^2 = 2$ for $x > 0$.", "answer": "\\sqrt{2}", "solution": "...", "level": "Level 4"},
    {"problem": "Convert $(0, 3)$ to polar coordinates.", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
     "solution": "...", "level": 5},
]


def test_gsm8k_jsonl_examples_answers_and_difficulty():
    examples = load_gsm8k(SAMPLE)
    raw = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert len(examples) == len(raw) == 20
    first = examples[0]
    assert set(first) == {"prompt", "answer", "solution", "difficulty"}
    assert first["prompt"] == f"Question: {raw[0]['question']}\nAnswer:"
    assert first["answer"] == "27" and first["solution"] == "Mara picks 12 + 15 = <<12+15=27>>27 apples."
    assert examples[-1]["answer"] == "4000"  # "#### 4,000": the thousands separator is dropped
    steps = [solution_steps(ex["solution"]) for ex in examples]
    assert [ex["difficulty"] for ex in examples] == ["hard" if s >= 4 else "easy" for s in steps]
    hard = load_gsm8k(SAMPLE, difficulty="hard")
    assert len(hard) == 8 and len(load_gsm8k(SAMPLE, difficulty="easy")) == 12
    assert len(load_gsm8k(SAMPLE, difficulty="hard", rule=SplitRule(easy_max=4, hard_min=5))) == 2
    banded = load_gsm8k(SAMPLE, rule=SplitRule(easy_max=2, hard_min=5))
    assert [ex["difficulty"] for ex in banded] == ["easy" if s <= 2 else "hard" if s >= 5 else "middle" for s in steps]
    assert [ex["prompt"] for ex in load_gsm8k(SAMPLE, template="plain", limit=2)] == [r["question"] for r in raw[:2]]
    boxed = load_gsm8k(SAMPLE, template="boxed", limit=1)[0]["prompt"]
    assert boxed.endswith("within \\boxed{}.") and boxed.startswith(raw[0]["question"])
    custom = load_gsm8k(SAMPLE, template="Q: {question}\nA: ", limit=1)[0]["prompt"]
    assert custom == f"Q: {raw[0]['question']}\nA: "


def test_gsm8k_through_load_dataset_parquet_and_directory(tmp_path):
    import pandas as pd

    raw = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    pd.DataFrame(raw).to_parquet(tmp_path / "train.parquet")
    from_parquet = load_gsm8k(tmp_path / "train.parquet")
    data_dir = tmp_path / "gsm8k"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text(SAMPLE.read_text())
    (data_dir / "test.jsonl").write_text("\n".join(SAMPLE.read_text().splitlines()[:3]) + "\n")
    from_dir = load_gsm8k(data_dir, split="train")
    assert from_parquet == from_dir == load_gsm8k(SAMPLE)
    assert len(load_gsm8k(data_dir, split="test")) == 3


def test_math500_examples_and_levels(tmp_path):
    path = tmp_path / "math500.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH_RECORDS))
    examples = load_math500(path)
    assert [ex["answer"] for ex in examples] == [r["answer"] for r in MATH_RECORDS]
    assert [ex["difficulty"] for ex in examples] == ["easy", "hard", "hard"]
    assert examples[0]["prompt"].startswith("What is $\\frac{1}{2}") and "\\boxed{}" in examples[0]["prompt"]
    assert len(load_math500(path, difficulty="easy")) == 1
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    assert load_math500(bare)[0]["difficulty"] is None
    with pytest.raises(ValueError, match="without a level"):
        load_math500(bare, difficulty="hard")


def test_loader_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_gsm8k("./nowhere/train.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1\\n#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        load_gsm8k(bad)
    bad.write_text('{"question": "q", "solution": "#### 1"}\n')
    with pytest.raises(ValueError, match="record 0: missing key 'answer'"):
        load_gsm8k(bad)
    bad.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(ValueError, match="record 0: answer has no final '#### N' line"):
        load_gsm8k(bad)
    with pytest.raises(ValueError, match="template"):
        load_gsm8k(SAMPLE, template="{prompt}")
    with pytest.raises(ValueError, match="difficulty"):
        load_gsm8k(SAMPLE, difficulty="medium")
    for err in (FileNotFoundError, ValueError):
        try:
            load_gsm8k(tmp_path / "missing.jsonl") if err is FileNotFoundError else load_gsm8k(SAMPLE, limit=0)
        except err as caught:
            assert "\n" not in str(caught)


def test_parse_solution_and_steps():
    assert parse_solution("a = <<1+1=2>>2\n\nb\n#### 1,234") == ("a = <<1+1=2>>2\n\nb", "1234")
    assert solution_steps("a\n\nb\n  \nc") == 3
