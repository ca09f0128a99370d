"""The learner on a tiny Llama: gradient accumulation, LoRA merge, the reference model, NaN safety, checkpoints."""
import pytest
import torch

from raylab.grpo.learner import Learner, NonFiniteLossError
from raylab.grpo.optim import LearnerConfig, LoraConfig
from raylab.grpo.policy import load_policy, pad_sequences, token_logprobs

PROMPTS = [[4, 5, 75], [6, 7, 83], [8, 9, 75], [5, 5, 83]]
COMPLETIONS = [[10, 1], [11, 12, 1], [13], [14, 15, 16, 1]]
ADV = [1.0, -0.5, 0.7, -1.2]


def params(learner):
    return {k: v.clone() for k, v in learner.model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_gradient_accumulation_equals_one_big_batch(tiny_model_dir, mode):
    a = Learner(tiny_model_dir, LearnerConfig(lr=1e-2, micro_batch_size=4), loss_agg_mode=mode)
    b = Learner(tiny_model_dir, LearnerConfig(lr=1e-2, micro_batch_size=1), loss_agg_mode=mode)
    sa, sb = a.train_step(PROMPTS, COMPLETIONS, ADV), b.train_step(PROMPTS, COMPLETIONS, ADV)
    assert sa["grad_norm"] == pytest.approx(sb["grad_norm"], rel=1e-4)
    # the accumulated gradients (still on the parameters after the step) are the same
    ga = {n: p.grad for n, p in a.model.named_parameters()}
    gb = {n: p.grad for n, p in b.model.named_parameters()}
    assert all(torch.allclose(ga[k], gb[k], atol=1e-6, rtol=1e-4) for k in ga)


def test_lora_export_is_the_merged_policy(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=5e-2, lora=LoraConfig(rank=4, alpha=8,
                                                                     target_modules=["q_proj", "v_proj"])))
    trainable = [n for n, p in learner.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    learner.train_step(PROMPTS, COMPLETIONS, ADV)
    plain = load_policy(tiny_model_dir)
    plain.load_state_dict(learner.export_weights(), strict=True)
    ids, attn, mask = pad_sequences(PROMPTS, COMPLETIONS, 0)
    with torch.no_grad():
        expected = token_logprobs(plain, ids, attn) * mask
    got, _ = learner.logprobs(PROMPTS, COMPLETIONS)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, learner.logprobs(PROMPTS, COMPLETIONS, reference=True)[0], atol=1e-4)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_kl_to_the_reference_starts_at_zero_and_grows(tiny_model_dir, lora_rank):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=5e-2, lora=LoraConfig(rank=lora_rank)), kl_coef=0.1,
                      kl_loss_type="k3")
    first = learner.train_step(PROMPTS, COMPLETIONS, ADV)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    assert learner.train_step(PROMPTS, COMPLETIONS, ADV)["kl"] > 1e-6
    assert min(learner.sequence_kl(PROMPTS, COMPLETIONS)) != 0.0


def test_no_reference_model_without_kl(tiny_model_dir):
    assert Learner(tiny_model_dir).ref_model is None


def test_several_updates_per_batch_clip_the_ratio(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=5e-2, ppo_epochs=3), clip_ratio_low=0.01, clip_ratio_high=0.01)
    stats = learner.train_step(PROMPTS, COMPLETIONS, ADV)
    assert stats["clip_frac"] > 0 and learner.updates == 3


def test_nan_loss_is_one_line_and_leaves_weights(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=1e-2))
    before = params(learner)
    with pytest.raises(NonFiniteLossError, match="loss is nan") as err:
        learner.train_step(PROMPTS, COMPLETIONS, [float("nan")] * 4)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    after = params(learner)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_round_trip_continues_identically(tiny_model_dir):
    a = Learner(tiny_model_dir, LearnerConfig(lr=1e-2))
    a.train_step(PROMPTS, COMPLETIONS, ADV)
    state = a.state_dict()
    b = Learner(tiny_model_dir, LearnerConfig(lr=1e-2))
    b.load_state_dict(state)
    sa, sb = a.train_step(PROMPTS, COMPLETIONS, ADV), b.train_step(PROMPTS, COMPLETIONS, ADV)
    assert sa["loss"] == sb["loss"] and sa["grad_norm"] == sb["grad_norm"]
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_logprob_gap_is_zero_for_the_learners_own_logprobs(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=1e-2))
    logp, mask = learner.logprobs(PROMPTS, COMPLETIONS)
    own = [row[m.bool()].tolist() for row, m in zip(logp, mask)]
    stats = learner.train_step(PROMPTS, COMPLETIONS, ADV, rollout_logprobs=own)
    assert stats["logprob_gap_max"] < 1e-5


def test_weight_transport_is_exact_for_float32_and_bfloat16():
    from raylab.grpo.rollout import pack_weights, unpack_weights

    weights = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.randn(2, 2).t()}
    back = unpack_weights(pack_weights(weights))
    for name, tensor in weights.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_adapter_export_is_the_peft_folder_and_needs_lora(tiny_model_dir):
    learner = Learner(tiny_model_dir, LearnerConfig(lr=1e-3, lora=LoraConfig(rank=4)), device="cpu")
    files = learner.export_adapter()
    assert sorted(files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert b'"r": 4' in files["adapter_config.json"]
    with pytest.raises(ValueError, match=r"rollout.lora_sync: adapter needs LoRA in the learner"):
        Learner(tiny_model_dir, LearnerConfig(lr=1e-3), device="cpu").export_adapter()
