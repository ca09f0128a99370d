"""Decoder actors: a pool of Ray actors that batch incoming decode requests (dynamic batching).

    pool = DecoderPool(functools.partial(TinyMDLM.load, "assets/tiny_mdlm"), num_actors=2,
                       defaults=dict(method="freedave", gen_length=12, block_length=12, draft_steps=8,
                                     mask_token_id=11))
    refs = [pool.submit(prompt) for prompt in prompts]      # one request per prompt (a 1-D LongTensor)
    results = ray.get(refs)                    # dicts: sequence, nfe, model_calls, decode_step, batch_size
    pool.shutdown()

Each actor is an asyncio actor: requests queue up while it decodes, and the next batch takes up to `max_batch`
waiting requests (after waiting at most `max_wait_s` for more) that share decoding options; prompts of different
lengths share a batch through left padding (`generate(..., prompt_lengths=...)`) where the options allow it
(answer block layout, no cache), else a batch also shares the prompt length. By default a batch runs to
completion. With `continuous=True` an actor batches continuously (`raylab.diffusion.decoding.decode_stream`,
run in a worker thread so that requests keep arriving): requests with the batch's options, of any prompt
length (left padding, widened when a longer prompt joins), join it between forwards while it has fewer than
`max_batch` rows, and each result is returned as its row ends (plain forwards only: options with a cache or the
absolute layout run batch by batch). A `draft_policy` (`raylab.diffusion.drafts.CostAwareDrafts`) in the
defaults is the actor's own copy: it learns from that actor's calls (batch by batch) or segments of rounds (continuous).
Every sequence of a batch decodes exactly as it would alone (see the decoding tests), so batching changes
speed, never answers. The pool deals requests to its actors in turn.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import ray
import torch

from raylab.diffusion.decoding import decode_stream, generate, left_pad

# options decode_stream does not take, with the values it behaves as
NOT_STREAMED = {"use_cache": False, "dual_cache": False, "block_layout": "answer", "prompt_lengths": None}


class DecoderActor:
    """Holds one model; `decode` calls are gathered into batches by a background loop."""

    def __init__(self, load_model: Callable[[], Callable], defaults: dict, max_batch: int, max_wait_s: float,
                 threads: int | None = None, continuous: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.defaults = load_model(), dict(defaults)
        self.max_batch, self.max_wait_s, self.continuous = max_batch, max_wait_s, continuous
        self.queue: asyncio.Queue | None = None
        self.batches: list[int] = []
        self.waiting: list = []
        self.joined = 0  # requests that joined a running batch between forwards

    async def decode(self, prompt_ids: torch.Tensor, options: dict | None = None) -> dict:
        if self.queue is None:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._serve())
        kwargs = {**self.defaults, **(options or {})}
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((prompt_ids, kwargs, done))
        return await done

    def batch_sizes(self) -> list[int]:
        return list(self.batches)

    def joined_count(self) -> int:
        return self.joined

    async def _serve(self) -> None:
        while True:
            if not self.waiting:
                self.waiting.append(await self.queue.get())
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(self.waiting) < self.max_batch and (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    self.waiting.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            key = self._key(self.waiting[0])
            batch = [r for r in self.waiting if self._key(r) == key][: self.max_batch]
            self.waiting = [r for r in self.waiting if all(r is not b for b in batch)]
            if self._streamed(batch[0][1]) is not None:
                await self._stream(batch, key)
            else:
                self._run(batch)
            await asyncio.sleep(0)  # let requests that arrived while decoding join the queue

    def _key(self, request) -> tuple:
        if self._streamed(request[1]) is not None:  # any prompt length: rows are left-padded
            return None, tuple(sorted(request[1].items()))
        return _batch_key(request)

    def _streamed(self, options: dict) -> dict | None:
        """The options for decode_stream, or None when this batch cannot be decoded continuously."""
        if not self.continuous or any(options.get(k, v) != v for k, v in NOT_STREAMED.items()):
            return None
        return {k: v for k, v in options.items() if k not in NOT_STREAMED}

    async def _take(self, key: tuple, room: int) -> list:
        """Up to `room` waiting requests of this key (the queue drained into the waiting list first)."""
        while not self.queue.empty():
            self.waiting.append(self.queue.get_nowait())
        taken = [r for r in self.waiting if self._key(r) == key][:room]
        self.waiting = [r for r in self.waiting if all(r is not t for t in taken)]
        return taken

    async def _stream(self, batch: list, key: tuple) -> None:
        loop = asyncio.get_running_loop()
        futures, running = [r[2] for r in batch], [len(batch)]
        self.batches.append(len(batch))

        def join() -> list:  # in the decoding thread, between forwards
            room = self.max_batch - running[0]
            if room <= 0:
                return []
            taken = asyncio.run_coroutine_threadsafe(self._take(key, room), loop).result()
            futures.extend(r[2] for r in taken)
            running[0] += len(taken)
            self.joined += len(taken)
            return [r[0] for r in taken]

        def done(index: int, sequence, nfe: int, decode_step) -> None:
            running[0] -= 1
            result = {"sequence": sequence, "nfe": nfe, "model_calls": nfe, "decode_step": decode_step,
                      "batch_size": running[0] + 1}
            loop.call_soon_threadsafe(futures[index].set_result, result)

        prompts, lengths = left_pad([r[0] for r in batch], batch[0][1].get("mask_token_id"))
        try:
            await asyncio.to_thread(decode_stream, self.model, prompts, join=join, done=done,
                                    prompt_lengths=lengths, **self._streamed(batch[0][1]))
        except Exception as err:  # every unanswered caller gets the error, the actor keeps serving
            for f in futures:
                if not f.done():
                    f.set_exception(err)

    def _run(self, batch: list) -> None:
        options = batch[0][1]
        prompts, lengths = left_pad([r[0] for r in batch], options.get("mask_token_id"))
        P = prompts.shape[1]
        pads = [P - len(r[0]) for r in batch]
        if lengths is not None:
            options = {**options, "prompt_lengths": lengths}
        try:
            out = generate(self.model, prompts, **options)
        except Exception as err:  # every caller of the batch gets the error, the actor keeps serving
            for *_, done in batch:
                done.set_exception(err)
            return
        self.batches.append(len(batch))
        for i, (*_, done) in enumerate(batch):
            done.set_result({"sequence": out.sequences[i, pads[i]:], "nfe": int(out.nfe[i]),
                             "model_calls": int(out.model_calls[i]), "decode_step": out.decode_step[i],
                             "batch_size": len(batch)})


def _batch_key(request) -> tuple:
    prompt, kwargs, _ = request
    paddable = kwargs.get("block_layout", "answer") == "answer" and not kwargs.get("use_cache", False)
    return None if paddable else prompt.shape, tuple(sorted(kwargs.items()))


class DecoderPool:
    """`num_actors` DecoderActors, each with `num_cpus` CPUs (and `num_gpus` GPUs)."""

    def __init__(self, load_model: Callable[[], Callable], num_actors: int = 1, defaults: dict | None = None,
                 max_batch: int = 16, max_wait_s: float = 0.005, num_cpus: float = 1, num_gpus: float = 0,
                 threads: int | None = 1, continuous: bool = False):
        if num_actors < 1:
            raise ValueError(f"num_actors: must be >= 1, got {num_actors}")
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=max(1000, 4 * max_batch))
        self.actors = [actor(DecoderActor).remote(load_model, defaults or {}, max_batch, max_wait_s, threads,
                                                  continuous) for _ in range(num_actors)]
        self.sent = 0

    def submit(self, prompt_ids: torch.Tensor, **options) -> ray.ObjectRef:
        """Queues one prompt (1-D) for decoding; `options` override the pool's generate() defaults."""
        if prompt_ids.ndim != 1:
            raise ValueError(f"prompt_ids: submit one prompt as a 1-D tensor, got shape {tuple(prompt_ids.shape)}")
        actor = self.actors[self.sent % len(self.actors)]
        self.sent += 1
        return actor.decode.remote(prompt_ids, options)

    def decode(self, prompts: torch.Tensor, **options) -> list[dict]:
        """Decodes every row of `prompts` through the pool and returns the results in order."""
        return ray.get([self.submit(p, **options) for p in prompts])

    def batch_sizes(self) -> list[int]:
        return [n for a in self.actors for n in ray.get(a.batch_sizes.remote())]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
