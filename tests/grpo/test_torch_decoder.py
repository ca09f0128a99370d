"""The `torch` rollout backend samples the model's own distribution: its recorded log-probs equal the learner's
recomputation, greedy decoding equals transformers' `generate`, and padding of mixed-length prompts changes
nothing."""
import pytest
import torch

from raylab.grpo.policy import build_char_tokenizer, load_policy, pad_sequences, token_logprobs
from raylab.grpo.rollout import SamplingConfig
from raylab.grpo.rollout.hf import HFRollout
from raylab.grpo.rollout.torch_decoder import TorchRollout

PROMPTS = ["12+34=", "5+6=", "789+1=", "0="]  # different lengths: the batch is left-padded


@torch.no_grad()
def learner_logprobs(model, completions, temperature):
    ids, attn, _ = pad_sequences([c.prompt_ids for c in completions], [c.completion_ids for c in completions], 0)
    logp = token_logprobs(model, ids, attn, temperature)
    return [logp[i, len(c.prompt_ids): len(c.prompt_ids) + len(c.completion_ids)] for i, c in enumerate(completions)]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.3, 0.9)])
def test_sampling_logprobs_equal_the_learners(tiny_model_dir, temperature, top_p):
    rollout = TorchRollout(tiny_model_dir, seed=1)
    completions = rollout.generate(PROMPTS, SamplingConfig(4, 10, temperature, top_p), seed=5)
    assert len(completions) == 16 and [c.prompt_index for c in completions] == [i // 4 for i in range(16)]
    model = load_policy(tiny_model_dir)
    for c, expected in zip(completions, learner_logprobs(model, completions, temperature)):
        assert len(c.completion_ids) == len(c.logprobs) >= 1
        if top_p == 1.0:  # with a nucleus the sampler renormalises, so its log-probs are >= the full ones
            assert torch.tensor(c.logprobs) == pytest.approx(expected, abs=1e-5)
        else:
            assert all(a >= b - 1e-5 for a, b in zip(c.logprobs, expected.tolist()))


def test_greedy_equals_transformers_generate(tiny_model_dir):
    greedy = SamplingConfig(1, 12, temperature=0.0)
    ours = TorchRollout(tiny_model_dir).generate(PROMPTS, greedy, seed=0)
    theirs = HFRollout(tiny_model_dir).generate(PROMPTS, greedy, seed=0)
    assert [c.completion_ids for c in ours] == [c.completion_ids for c in theirs]
    assert [c.prompt_ids for c in ours] == [c.prompt_ids for c in theirs]
    # and one prompt alone (no padding) decodes the same as inside the padded batch
    alone = TorchRollout(tiny_model_dir).generate(PROMPTS[1:2], greedy, seed=0)
    assert alone[0].completion_ids == ours[1].completion_ids


def test_a_tiny_nucleus_is_greedy(tiny_model_dir):
    rollout = TorchRollout(tiny_model_dir)
    nucleus = rollout.generate(PROMPTS, SamplingConfig(2, 8, temperature=1.0, top_p=1e-6), seed=3)
    greedy = rollout.generate(PROMPTS, SamplingConfig(1, 8, temperature=0.0), seed=0)
    assert [c.completion_ids for c in nucleus[::2]] == [c.completion_ids for c in greedy]
    assert all(lp == pytest.approx(0.0, abs=1e-6) for c in nucleus for lp in c.logprobs)


def test_qwen2_with_qkv_bias_matches_its_forward():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         pad_token_id=0, eos_token_id=1))
    with torch.no_grad():  # random biases, so the fused q|k|v bias is really exercised
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()
    completions = TorchRollout(model, tokenizer=tokenizer, seed=0).generate(PROMPTS, SamplingConfig(3, 6), seed=1)
    for c, expected in zip(completions, learner_logprobs(model, completions, 1.0)):
        assert torch.tensor(c.logprobs) == pytest.approx(expected, abs=1e-5)


def test_other_architectures_are_refused_in_one_line():
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_char_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="rollout.backend=hf") as err:
        TorchRollout(model, tokenizer=tokenizer)
    assert "\n" not in str(err.value)
