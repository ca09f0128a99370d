"""The tiny tokenizer and model: real transformers objects, saved and loaded; padding and log-probs."""
import pytest
import torch

from raylab.data.arithmetic import make_arithmetic
from raylab.grpo.policy import drop_carries, load_policy, load_tokenizer, pad_sequences, token_logprobs


def test_char_tokenizer_round_trips_through_from_pretrained(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    ids = tok("12+ 7=")["input_ids"]
    assert len(ids) == 6 and tok.decode(ids) == "12+ 7="
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "12+ 7="


def test_missing_model_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="model: no such local model directory") as err:
        load_policy(str(tmp_path / "absent"))
    assert "\n" not in str(err.value)


def test_token_logprobs_match_the_model_loss(tiny_model_dir):
    model = load_policy(tiny_model_dir)
    ids, attn, comp = pad_sequences([[4, 5, 75], [6]], [[10, 1], [7, 8, 1]], pad_id=0)
    assert ids.tolist() == [[4, 5, 75, 10, 1], [6, 7, 8, 1, 0]]
    assert comp.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 0]]
    logp = token_logprobs(model, ids, attn)
    # the causal LM loss on the completion tokens of row 0 is minus their mean log-prob
    labels = torch.tensor([[-100, -100, -100, 10, 1]])
    with torch.no_grad():
        loss = model(input_ids=ids[:1], labels=labels).loss
    assert -(logp[0, 3:].mean()).item() == pytest.approx(loss.item(), rel=1e-5)
    # right padding does not change a row's log-probs
    alone = token_logprobs(model, ids[1:, :4], attn[1:, :4])
    assert torch.allclose(alone[0], logp[1, :4], atol=1e-5)


def test_arithmetic_examples_are_exact_and_seeded():
    a = make_arithmetic(50, digits=2, terms=3, ops="+-*", seed=3)
    assert a == make_arithmetic(50, digits=2, terms=3, ops="+-*", seed=3)
    for ex in a:
        assert ex["prompt"].endswith("=") and str(eval(ex["prompt"][:-1])) == ex["answer"]
    with pytest.raises(ValueError, match="ops"):
        make_arithmetic(5, ops="/")


def test_flawed_teacher_drops_only_carries():
    examples = make_arithmetic(2000, digits=1, seed=1)
    flawed = drop_carries(examples, keep=0.35)
    assert flawed == drop_carries(examples, keep=0.35)
    carries = [(e, f) for e, f in zip(examples, flawed) if len(e["answer"]) > 1]
    assert all(e == f for e, f in zip(examples, flawed) if len(e["answer"]) == 1)
    # a dropped carry keeps the units digit; about 35% of the carry answers stay right
    assert all(f["answer"] in (e["answer"], e["answer"][1:]) for e, f in carries)
    kept = sum(e == f for e, f in carries) / len(carries)
    assert 0.28 < kept < 0.42
