"""The LM diagnostics: pi* is the probability of the answer sequence (checked against sampling-free products of
token probabilities), its gradient is autograd's, the finite-difference curvature equals the exact Hessian-vector
product (double backward), cosines and Pearson have their textbook values."""
import math

import pytest
import torch

from raylab.grpo import diagnostics
from raylab.grpo.policy import build_char_tokenizer

EXAMPLES = [{"prompt": "3+4=", "answer": "7"}, {"prompt": "7+8=", "answer": "15"}, {"prompt": "1+1=", "answer": "2"}]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    # eager attention: the exact Hessian-vector product below needs double backward, which SDPA lacks on CPU
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").double()


def test_success_prob_is_the_product_of_token_probabilities(model):
    tok = build_char_tokenizer()
    ids = tok("7+8=15", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    expected = sum(logp[t - 1, ids[t]].item() for t in range(4, len(ids)))
    assert diagnostics.success_probs(model, tok, [EXAMPLES[1]])[0].item() == pytest.approx(math.exp(expected))


def test_finite_difference_curvature_equals_the_exact_hessian_vector_product(model):
    tok = build_char_tokenizer()
    params = [p for p in model.parameters() if p.requires_grad]
    direction = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    unit = direction / direction.norm()
    before = diagnostics.flat_parameters(model)
    # eps 1e-2: Llama's RMSNorm computes in float32 even in a float64 model, so smaller steps only add noise
    got = diagnostics.curvature_along(model, tok, EXAMPLES, direction, eps=1e-2)
    assert torch.equal(diagnostics.flat_parameters(model), before)  # weights restored
    for i, example in enumerate(EXAMPLES):
        prob = diagnostics.success_logprobs(model, tok, [example]).exp()[0]
        grads = torch.autograd.grad(prob, params, create_graph=True)
        flat = torch.cat([g.flatten() for g in grads])
        hvp = torch.cat([h.flatten() for h in torch.autograd.grad(flat @ unit, params)])
        assert got[i].item() == pytest.approx(hvp.norm().item(), rel=2e-3)
    grads = diagnostics.question_gradients(model, tok, EXAMPLES)
    assert grads.shape == (3, len(before)) and grads.norm(dim=1).min() > 0


def test_cosines_and_pearson():
    rows = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [-3.0, 0, 0], [0, 0, 0]])
    assert diagnostics.pairwise_abs_cosines(rows).tolist() == [0.0, 1.0, 0.0]  # the zero row is left out
    x, y = [1, 2, 3, 4], [2, 4, 6, 8.5]
    mx, my = sum(x) / 4, sum(y) / 4
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    expected = sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    r, p = diagnostics.pearson(x, y)
    assert r == pytest.approx(expected, rel=1e-12) and p < 0.01
    assert math.isnan(diagnostics.pearson([1, 1, 1], [1, 2, 3])[0])
