"""The real GSM8K files (../shared/data/gsm8k: 7,473 train, 1,319 test) and the easy/hard rules on them: the
counts docs/grpo.md reports, the closest rules to the seed's 4,695 / 1,909, and the rules' one-line errors.
Skipped, with the reason, where ../shared is absent."""
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from raylab.data.gsm8k import load_gsm8k, split_counts
from raylab.data.split import SplitRule

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GSM8K = SHARED / "data" / "gsm8k"
QWEN2 = SHARED / "reference_models" / "sdar"  # a Qwen2-family BPE vocabulary
needs_gsm8k = pytest.mark.skipif(not (GSM8K / "train.jsonl").is_file(), reason=f"no real GSM8K at {GSM8K}")


@needs_gsm8k
def test_real_files_load_with_the_default_rule():
    train, test = load_gsm8k(GSM8K / "train.jsonl"), load_gsm8k(GSM8K / "test.jsonl")
    assert (len(train), len(test)) == (7473, 1319)
    assert split_counts(GSM8K / "train.jsonl", SplitRule()) == {"easy": 4110, "middle": 0, "hard": 3363}


@needs_gsm8k
@pytest.mark.parametrize("rule, counts", [
    (SplitRule("chars", 303, 358), {"easy": 4691, "middle": 873, "hard": 1909}),  # the closest rule found
    (SplitRule("steps", 3, 5), {"easy": 4110, "middle": 1659, "hard": 1704}),
])
def test_split_counts_on_the_real_train_split(rule, counts):
    assert split_counts(GSM8K / "train.jsonl", rule) == counts


@needs_gsm8k
@pytest.mark.skipif(not (QWEN2 / "vocab.json").is_file(), reason=f"no Qwen2 vocabulary at {QWEN2}")
def test_token_rule_with_the_qwen2_vocabulary():
    rule = SplitRule("tokens", 128, 150, tokenizer=str(QWEN2))
    assert split_counts(GSM8K / "train.jsonl", rule) == {"easy": 4674, "middle": 911, "hard": 1888}


def test_bad_rules_are_one_line_errors():
    adapter = TypeAdapter(SplitRule)
    for data, message in [({"easy_max": 5, "hard_min": 5}, "bands overlap"),
                          ({"measure": "tokens"}, "needs a tokenizer"),
                          ({"measure": "words"}, "measure")]:
        with pytest.raises(ValidationError, match=message):
            adapter.validate_python(data)
    with pytest.raises(ValueError, match="data.split.tokenizer: no such local model directory") as err:
        SplitRule("tokens", 1, 2, tokenizer="./no/such/tokenizer").check_tokenizer("data.split")
    assert "\n" not in str(err.value)
