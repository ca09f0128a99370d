"""The GRPO loss on a two-token example against hand-derived values, and the aggregation modes."""
import math

import pytest
import torch

from raylab.grpo.loss import BatchTotals, aggregate, kl_estimate, policy_loss


def two_tokens():
    logp = torch.log(torch.tensor([[0.6, 0.3]])).requires_grad_(True)
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    return logp, old, torch.ones(1, 2)


def test_clipped_loss_on_two_tokens():
    logp, old, mask = two_tokens()
    # ratios 1.2 and 0.6; with A = 1 and eps 0.1: token 1 is clipped to 1.1, token 2 keeps 0.6
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, clip_ratio_low=0.1, clip_ratio_high=0.1)
    assert loss.item() == pytest.approx((-1.1 - 0.6) / 2)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    loss.backward()
    # the clipped token has no gradient; d(-A rho / 2)/d logp = -rho / 2 for the other
    assert logp.grad[0].tolist() == pytest.approx([0.0, -0.3])


def test_low_and_high_clip_are_separate():
    logp, old, mask = two_tokens()
    # A = -1: the pessimistic bound clips ratio 0.6 at 1 - 0.2 = 0.8 and leaves 1.2 (< 1 + 0.28) alone
    loss, stats = policy_loss(logp, old, torch.tensor([-1.0]), mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    assert loss.item() == pytest.approx((1.2 + 0.8) / 2)
    assert stats["clip_frac"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("kl_type", ["k1", "k3"])
def test_kl_term_in_the_loss(kl_type):
    logp, old, mask = two_tokens()
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, clip_ratio_low=0.1, clip_ratio_high=0.1,
                              ref_logp=ref, kl_coef=0.1, kl_type=kl_type)
    if kl_type == "k1":
        kls = [math.log(0.6 / 0.5), math.log(0.3 / 0.5)]
    else:
        kls = [0.5 / p - math.log(0.5 / p) - 1 for p in (0.6, 0.3)]
    assert stats["kl"].item() == pytest.approx(sum(kls) / 2)
    assert loss.item() == pytest.approx((-1.1 - 0.6) / 2 + 0.1 * sum(kls) / 2)


def test_k3_is_nonnegative_and_zero_at_equality():
    logp = torch.randn(50)
    assert (kl_estimate(logp, logp + torch.randn(50), "k3") >= 0).all()
    assert kl_estimate(logp, logp, "k3").abs().max() == 0
    with pytest.raises(ValueError, match="kl_loss_type 'k2'"):
        kl_estimate(logp, logp, "k2")


def test_aggregation_modes_by_hand():
    values = torch.tensor([[1.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    totals = BatchTotals.of(mask, max_len=5)
    assert aggregate(values, mask, "token-mean", totals).item() == pytest.approx(13 / 4)
    assert aggregate(values, mask, "seq-mean-token-mean", totals).item() == pytest.approx((1 + 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm", totals).item() == pytest.approx(13 / (2 * 5))
    with pytest.raises(ValueError, match="loss_agg_mode 'mean'"):
        aggregate(values, mask, "mean", totals)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_shares_add_up_to_the_full_batch(mode):
    torch.manual_seed(0)
    logp, old = torch.randn(6, 5) - 2, torch.randn(6, 5) - 2
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    adv = torch.randn(6)
    totals = BatchTotals.of(mask)
    full, _ = policy_loss(logp, old, adv, mask, loss_agg_mode=mode)
    parts = sum(policy_loss(logp[s], old[s], adv[s], mask[s], loss_agg_mode=mode, totals=totals)[0]
                for s in (slice(0, 2), slice(2, 6)))
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)
