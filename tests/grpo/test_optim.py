"""The learner's optimizers and schedules: SGD is a plain gradient step (with heavy-ball momentum when asked),
the schedules have their exact values, the learner follows its schedule, and bad settings are one-line errors."""
import math

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from raylab.grpo.learner import Learner
from raylab.grpo.optim import LearnerConfig, build_optimizer, lr_factor

PROMPTS = [[4, 5, 75], [6, 7, 83]]
COMPLETIONS = [[10, 1], [11, 12, 1]]
ADV = [1.0, -1.0]


def test_sgd_is_a_gradient_step_and_momentum_is_heavy_ball():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer([w], LearnerConfig(optimizer="sgd", lr=0.1, momentum=0.5))
    for expected in ([0.9, -2.1], [0.75, -2.25]):  # g = 1 each step: v = 1 then 1.5
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        assert w.tolist() == pytest.approx(expected)
    assert isinstance(build_optimizer([w], LearnerConfig()), torch.optim.AdamW)


def test_schedules_exact_values():
    assert [lr_factor("constant", s, warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert [lr_factor("linear", s, 0, 5) for s in range(5)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    cosine = [lr_factor("cosine", s, 2, 7, min_lr_ratio=0.1) for s in range(7)]
    assert cosine[:2] == [0.5, 1.0] and cosine[-1] == pytest.approx(0.1)
    assert cosine[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError, match="needs the number of training steps"):
        lr_factor("cosine", 0)


def test_learner_follows_its_schedule_and_sgd_moves_by_lr_times_gradient(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(optimizer="sgd", lr=0.5, schedule="linear", max_grad_norm=1e9),
                      total_steps=3)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    lrs = [learner.train_step(PROMPTS, COMPLETIONS, ADV)["lr"]]
    grads = {n: p.grad.clone() for n, p in learner.model.named_parameters()}
    for n, p in learner.model.named_parameters():
        assert torch.allclose(p.detach(), before[n] - 0.5 * grads[n], atol=1e-7)
    lrs += [learner.train_step(PROMPTS, COMPLETIONS, ADV)["lr"] for _ in range(2)]
    assert lrs == pytest.approx([0.5, 0.25, 0.0])


@pytest.mark.parametrize("data, message", [
    ({"optimizer": "adam"}, "optimizer"),
    ({"schedule": "step"}, "schedule"),
    ({"optimizer": "adamw", "momentum": 0.9}, "only sgd takes a momentum"),
    ({"lr": float("inf")}, "lr: must be a finite number"),
    ({"lora": {"rank": -1}}, "rank: must be >= 0"),
])
def test_bad_learner_settings_are_one_line_errors(data, message):
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(LearnerConfig).validate_python(data)
