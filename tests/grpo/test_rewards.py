"""The reward registry: math_verify on GSM8K / MATH500 answers, exact_match, dotted-path callables, and errors."""
import json
import threading
from pathlib import Path

import pytest

from raylab.data.gsm8k import load_gsm8k
from raylab.grpo.rewards import extract_answer, resolve_reward

SAMPLE = Path(__file__).parents[1] / "data" / "gsm8k_sample.jsonl"


def half_length(completions, examples):
    """A user's reward, named by dotted path in the tests below."""
    return [len(c) / 2 for c in completions]


def short_reward(completions, examples):
    return [1.0]


def test_math_verify_on_gsm8k_solutions_and_wrong_answers():
    reward = resolve_reward("math_verify")
    examples = load_gsm8k(SAMPLE)
    raw = [json.loads(line)["answer"] for line in SAMPLE.read_text().splitlines()]
    # the reference solutions themselves are right; the same with the final number off by one is wrong
    assert reward(raw, examples) == [1.0] * 20
    wrong = [r.rpartition("####")[0] + f"#### {int(ex['answer']) + 1}" for r, ex in zip(raw, examples)]
    assert reward(wrong, examples) == [0.0] * 20
    styles = ["So she has 4,000 m in total.", "The answer is: $4000.", "\\boxed{4000}", "4000.0", "no number"]
    assert reward(styles, [examples[-1]] * 5) == [1.0, 1.0, 1.0, 1.0, 0.0]
    # a raw GSM8K answer field as the reference is reduced to its #### number
    assert reward(["It is 27."], [{"answer": "12 + 15 = 27\n#### 27"}]) == [1.0]


def test_math_verify_on_latex_answers():
    reward = resolve_reward("math_verify")
    examples = [{"answer": "\\frac{3}{4}"}, {"answer": "\\sqrt{2}"}, {"answer": "\\left( 3, \\frac{\\pi}{2} \\right)"},
                {"answer": "\\frac{3}{4}"}, {"answer": "\\sqrt{2}"}]
    completions = ["Adding, we get \\boxed{0.75}.", "so $x = \\boxed{\\sqrt 2}$", "\\boxed{(3, \\frac{\\pi}{2})}",
                   "\\boxed{\\frac{4}{3}}", "The answer is $\\sqrt{3}$."]
    assert reward(completions, examples) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_math_verify_runs_off_the_main_thread():
    """SIGALRM timeouts only work in the main thread; elsewhere the check must still run (without the alarm)."""
    reward, out = resolve_reward("math_verify"), []
    worker = threading.Thread(target=lambda: out.append(reward(["\\boxed{\\frac{6}{8}}"], [{"answer": "\\frac34"}])))
    worker.start()
    worker.join(timeout=60)
    assert out == [[1.0]]


def test_answer_extraction():
    assert extract_answer("x \\boxed{\\frac{1}{2}} then \\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("steps\n#### 1,234\n") == "1,234"
    assert extract_answer("The Answer is 17.") == "17"
    assert extract_answer("3 apples and -4.5 pears") == "-4.5"
    assert extract_answer("\\boxed{cut off") is None and extract_answer("none") is None


def test_exact_match_and_dotted_paths():
    exact = resolve_reward("exact_match")
    assert exact([" 82\n", "83", "082"], [{"answer": "82"}] * 3) == [1.0, 0.0, 0.0]
    assert resolve_reward(f"{__name__}:half_length")(["abcd", ""], [{}, {}]) == [2.0, 0.0]
    assert resolve_reward(f"{__name__}.half_length")(["ab"], [{}]) == [1.0]


def test_bad_reward_names_and_outputs_give_one_line_errors():
    for name, match in [("nonsense", "unknown reward 'nonsense'"), ("no_such_pkg.mod:fn", "cannot import module"),
                        (f"{__name__}:missing", "no callable 'missing'"), ("json.loads.x", "cannot import")]:
        with pytest.raises(ValueError, match=match) as err:
            resolve_reward(name)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="returned 1 values for 2 completions"):
        resolve_reward(f"{__name__}:short_reward")(["a", "b"], [{}, {}])
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        resolve_reward("exact_match")(["a", "b"], [{"answer": "a"}])


def test_integer_answers_are_compared_exactly():
    reward = resolve_reward("math_verify")
    for n in (7, 1_000_000, 192_000_000, 10**15):
        assert reward([f"#### {n}", f"#### {n + 1}", f"#### {n - 1}", f"#### {n * 10}", f"#### {n}.0"],
                      [{"answer": str(n)}] * 5) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_decorated_answers_parse_alike():
    reward = resolve_reward("math_verify")
    styles = ["The answer is **7**.", "#### 7 dollars", "\\$7", "The answer is 7 apples.", "The answer is $7.",
              "\\boxed{7 dollars}", "**Answer:** #### 7", "The answer is **\\$7**."]
    assert reward(styles, [{"answer": "7"}] * len(styles)) == [1.0] * len(styles)
    wrong = [s.replace("7", "8") for s in styles]
    assert reward(wrong, [{"answer": "7"}] * len(styles)) == [0.0] * len(styles)
    assert extract_answer("The answer is 3/4 of it.") == "3/4 of it"  # not a number followed by words


REAL_GSM8K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k"


@pytest.mark.skipif(not (REAL_GSM8K / "train.jsonl").is_file(), reason=f"no real GSM8K at {REAL_GSM8K}")
def test_every_real_gsm8k_solution_scores_one_and_its_corruptions_zero():
    reward = resolve_reward("math_verify")
    for split in ("train", "test"):
        raw = [json.loads(line)["answer"] for line in (REAL_GSM8K / f"{split}.jsonl").read_text().splitlines()]
        examples = load_gsm8k(REAL_GSM8K / f"{split}.jsonl")
        assert reward(raw, examples) == [1.0] * len(raw), split
        body = [r.rpartition("####")[0] for r in raw]
        for corrupt in (lambda n: n + 1, lambda n: n * 10 if n else 10, lambda n: -n - 3):  # N*10 != N for N=0
            wrong = [f"{b}#### {corrupt(int(ex['answer']))}" for b, ex in zip(body, examples)]
            scores = reward(wrong, examples)
            assert scores == [0.0] * len(raw), (split, [raw[i] for i, s in enumerate(scores) if s][:3])
