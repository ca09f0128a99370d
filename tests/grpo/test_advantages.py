"""Group advantages on hand-computed values, and the curvature diagnostic on known success rates."""
import math

import pytest
import torch

from raylab.grpo.advantages import curvature_diagnostic, group_advantages, mode_from_config

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])


def test_std_mode_divides_by_population_std():
    adv = group_advantages(REWARDS, "std", eps=0.0 + 1e-12)
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert torch.equal(adv[1], torch.zeros(4))  # no variance, no signal
    # p = 1/4: std = sqrt(3)/4, centered = [3/4, -1/4, -1/4, -1/4]
    assert torch.allclose(adv[2], torch.tensor([3.0, -1.0, -1.0, -1.0]) / math.sqrt(3), atol=1e-6)


def test_no_std_and_dr_grpo_subtract_the_mean():
    for mode in ("no_std", "dr_grpo"):
        adv = group_advantages(REWARDS, mode)
        assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
        assert torch.allclose(adv[2], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_rloo_uses_the_mean_of_the_others():
    adv = group_advantages(REWARDS, "rloo")
    # r_1 = 1, the others average 1/3
    assert torch.allclose(adv[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    assert torch.allclose(adv[2], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def test_plain_policy_gradient_has_no_baseline():
    assert torch.equal(group_advantages(REWARDS, "pg"), REWARDS)


def test_std_mode_is_no_std_divided_by_sqrt_p_one_minus_p():
    p = 0.25
    ratio = group_advantages(REWARDS[2:], "std") / group_advantages(REWARDS[2:], "no_std")
    assert torch.allclose(ratio, torch.full((1, 4), 1 / math.sqrt(p * (1 - p))), rtol=1e-5)


def test_config_names_map_to_modes():
    assert mode_from_config("grpo", True) == "std"
    assert mode_from_config("grpo", False) == "no_std"
    assert mode_from_config("rloo", True) == "rloo"


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="advantage mode 'nope'"):
        group_advantages(REWARDS, "nope")
    with pytest.raises(ValueError, match="K=1"):
        group_advantages(torch.ones(3, 1), "std")
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.ones(4), "std")


def test_curvature_diagnostic_reports_variance_and_effective_step():
    d = curvature_diagnostic(REWARDS, lr=0.1, mode="std")
    # variances 1/4, 0, 3/16; the zero-variance group is left out of the step sizes
    assert d["reward_var_mean"] == pytest.approx((0.25 + 0 + 3 / 16) / 3)
    assert d["frac_zero_std"] == pytest.approx(1 / 3)
    assert d["effective_lr_max"] == pytest.approx(0.1 / math.sqrt(3 / 16))
    assert d["effective_lr_mean"] == pytest.approx((0.1 / 0.5 + 0.1 / math.sqrt(3 / 16)) / 2)
    assert curvature_diagnostic(REWARDS, lr=0.1, mode="no_std")["effective_lr_max"] == pytest.approx(0.1)
