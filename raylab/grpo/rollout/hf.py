"""The `hf` rollout backend: Hugging Face `generate` on a causal LM, sampling K completions per prompt.

    rollout = HFRollout("assets/tiny_policy", seed=0)
    completions = rollout.generate(["12+7="], SamplingConfig(num_generations=8, max_new_tokens=8), seed=1)
    rollout.load_weights(pack_weights(learner_state_dict))      # new policy weights, in place

Each completion keeps the log-prob of its sampled tokens under the sampling distribution (softmax of the
temperature-scaled logits), which the trainer compares with the learner's recomputed log-probs.
"""
from __future__ import annotations

import torch

from raylab.grpo.policy import load_policy, load_tokenizer, pad_sequences, token_logprobs
from raylab.grpo.rollout.common import Completion, SamplingConfig, unpack_weights


class HFRollout:
    def __init__(self, model: str, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
        self.tokenizer = load_tokenizer(model)
        self.tokenizer.padding_side = "left"  # generation continues every prompt from its last real token
        self.device = torch.device(device)
        self.model = load_policy(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.seed = seed

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[Completion]:
        """K = sampling.num_generations completions for each prompt, prompt by prompt in order."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        torch.manual_seed(self.seed * 1_000_003 + seed)
        sample = sampling.temperature > 0  # temperature 0 means greedy decoding
        out = self.model.generate(**enc, do_sample=sample, temperature=sampling.temperature if sample else None,
                                  top_p=sampling.top_p if sample else None, top_k=0 if sample else None,
                                  max_new_tokens=sampling.max_new_tokens,
                                  num_return_sequences=sampling.num_generations, output_scores=True,
                                  return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
                                  eos_token_id=self.tokenizer.eos_token_id)
        width = enc["input_ids"].shape[1]
        new_tokens = out.sequences[:, width:]
        # scores are the processed (temperature, top-p) logits each token was sampled from
        logp = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], dim=1)
        logp = logp.gather(-1, new_tokens[..., None]).squeeze(-1).cpu()
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        return completion_records(self.tokenizer, prompt_ids, new_tokens.tolist(), logp, sampling.num_generations)

    def load_weights(self, packed: dict) -> None:
        load_packed(self.model, packed)

    def score(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        return score_completion(self.model, self.tokenizer, prompt_ids, completion_ids, temperature)


# --- shared with the torch backend, which holds the same kind of Hugging Face model --------------------------
def completion_records(tokenizer, prompt_ids: list[list[int]], rows: list[list[int]], logp: torch.Tensor,
                       k: int) -> list[Completion]:
    """Completion records of generated rows (K per prompt, in prompt order), each cut after its first EOS."""
    eos = tokenizer.eos_token_id
    completions = []
    for row, tokens in enumerate(rows):
        finished = eos in tokens
        length = tokens.index(eos) + 1 if finished else len(tokens)
        completions.append(Completion(
            prompt_index=row // k, prompt_ids=prompt_ids[row // k], completion_ids=tokens[:length],
            logprobs=logp[row, :length].tolist(),
            text=tokenizer.decode(tokens[:length], skip_special_tokens=True), finished=finished))
    return completions


def load_packed(model, packed: dict) -> None:
    """Copies `pack_weights` output into a Hugging Face model (every parameter name must match)."""
    model.load_state_dict(unpack_weights(packed), strict=True)


@torch.no_grad()
def score_completion(model, tokenizer, prompt_ids: list[int], completion_ids: list[int],
                     temperature: float = 1.0) -> list[float]:
    """The log-prob of each completion token given the prompt, under the model's current weights."""
    device = next(model.parameters()).device
    ids, attn, _ = pad_sequences([prompt_ids], [completion_ids], tokenizer.pad_token_id)
    logp = token_logprobs(model, ids.to(device), attn.to(device), temperature)[0]
    return logp[len(prompt_ids):].tolist()
