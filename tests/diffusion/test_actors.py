"""Decoder actors: results through a pool of Ray actors (with dynamic batching) equal local decoding."""
import functools

import pytest
import ray
import torch
from dllm_models import MASK, random_transformer

from raylab.diffusion import generate

DEFAULTS = dict(method="freedave", gen_length=8, block_length=4, draft_steps=4, mask_token_id=MASK)


@pytest.mark.ray
def test_pool_results_equal_local_results(ray_local, tmp_path):
    from raylab.diffusion.actors import DecoderPool
    from raylab.diffusion.model import TinyMDLM

    model = random_transformer(4).float()  # saved in float32, loaded back in float64 by the actors and here
    model.save(tmp_path)
    load = functools.partial(TinyMDLM.load, tmp_path, torch.float64)
    prompts = torch.randint(0, MASK, (12, 3), generator=torch.Generator().manual_seed(0))
    pool = DecoderPool(load, num_actors=2, defaults=DEFAULTS, max_batch=4,
                       max_wait_s=0.2, num_cpus=0.5)
    try:
        results = pool.decode(prompts)
        static = pool.decode(prompts[:3], method="static")
        sizes = pool.batch_sizes()
        with pytest.raises(ValueError, match="block_length: 3 does not divide gen_length 8"):
            pool.decode(prompts[:1], block_length=3)
        mixed = [prompts[i, : 1 + i % 3] for i in range(6)]  # lengths 1, 2, 3, ...: batched by left padding
        before = [ray.get(a.batch_sizes.remote()) for a in pool.actors]
        mixed_results = ray.get([pool.submit(p) for p in mixed])
        mixed_sizes = [n for a, b in zip(pool.actors, before) for n in ray.get(a.batch_sizes.remote())[len(b):]]
    finally:
        pool.shutdown()
    local = generate(load(), prompts, **DEFAULTS)
    for i, r in enumerate(results):
        assert torch.equal(r["sequence"], local.sequences[i])
        assert r["nfe"] == local.nfe[i].item() and torch.equal(r["decode_step"], local.decode_step[i])
    assert all(torch.equal(s["sequence"], local.sequences[i]) for i, s in enumerate(static))
    assert sum(sizes) == 15 and max(sizes) > 1  # requests were batched, none lost
    for p, r in zip(mixed, mixed_results):
        alone = generate(load(), p[None], **DEFAULTS)
        assert torch.equal(r["sequence"], alone.sequences[0]) and r["nfe"] == int(alone.nfe[0])
    assert sum(mixed_sizes) == 6 and max(mixed_sizes) > 1


@pytest.mark.ray
def test_continuous_batching_lets_requests_join_a_running_batch(ray_local, tmp_path):
    from raylab.diffusion.actors import DecoderPool
    from raylab.diffusion.model import TinyMDLM

    model = random_transformer(6).float()
    model.save(tmp_path)
    load = functools.partial(TinyMDLM.load, tmp_path, torch.float64)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, MASK, (n,), generator=g) for n in (3, 2, 4, 3, 5, 2, 3, 4, 2, 5)]
    opts = {**DEFAULTS, "gen_length": 16}
    pool = DecoderPool(load, num_actors=1, defaults=opts, max_batch=3, max_wait_s=0.05, num_cpus=0.5,
                       continuous=True)
    try:
        results = ray.get([pool.submit(p) for p in prompts])  # 10 requests, at most 3 rows at a time
        joined = ray.get(pool.actors[0].joined_count.remote())
        batches = pool.batch_sizes()  # each batch's rows when it started
    finally:
        pool.shutdown()
    local = load()
    for p, r in zip(prompts, results):
        alone = generate(local, p[None], **opts)
        assert torch.equal(r["sequence"], alone.sequences[0]) and r["nfe"] == int(alone.nfe[0])
    assert max(r["batch_size"] for r in results) <= 3
    assert joined > 0 and joined == 10 - sum(batches)  # rows of any length joined running batches


@pytest.mark.ray
@pytest.mark.parametrize("continuous", [False, True])
def test_a_draft_policy_in_the_defaults_learns_in_each_actor_and_keeps_static_answers(ray_local, tmp_path,
                                                                                    continuous):
    from raylab.diffusion.actors import DecoderPool
    from raylab.diffusion.drafts import CostAwareDrafts
    from raylab.diffusion.model import TinyMDLM

    random_transformer(7).float().save(tmp_path)
    load = functools.partial(TinyMDLM.load, tmp_path, torch.float64)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, MASK, (n,), generator=g) for n in (3, 2, 4, 3, 5, 2, 3, 4)]
    opts = {**DEFAULTS, "draft_policy": CostAwareDrafts(4)}
    pool = DecoderPool(load, num_actors=1, defaults=opts, max_batch=3, max_wait_s=0.05, num_cpus=0.5,
                       continuous=continuous)
    try:
        results = ray.get([pool.submit(p) for p in prompts])
        sizes = pool.batch_sizes()
    finally:
        pool.shutdown()
    local = load()
    for p, r in zip(prompts, results):
        assert torch.equal(r["sequence"], generate(local, p[None], **{**DEFAULTS, "method": "static"}).sequences[0])
    assert max(sizes) > 1  # one policy object per actor: requests still share batches
