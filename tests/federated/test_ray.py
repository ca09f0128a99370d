"""The actor-sharded simulation on a local Ray instance: equal to the single-process one, survives a killed
agent actor, and resumes after an interruption to the same final state as an uninterrupted run."""
import pytest
import torch
import yaml

from raylab import driver
from raylab.config import load_config
from raylab.federated.actors import RayPool
from raylab.federated.server import LocalPool, Server
from raylab.federated.simulate import make_methods
from raylab.results import RunContext, read_metrics

pytestmark = pytest.mark.ray

SMALL = {"experiment": "federated", "rounds": 20, "eval_every": 5, "checkpoint_every": 5, "dtype": "float64",
         "data": {"kind": "digits", "num_agents": 24, "alpha": 0.3}, "availability": {"kind": "markov", "p": 0.3},
         "alm": {"tau": 0.2, "rho": 0.4, "eta": 0.05, "server_lr_scale": 0.05}, "num_actors": 2,
         "progress": False}


def config(tmp_path, **extra):
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(tmp_path / "runs"), **extra}))
    return load_config(path)


def final_models(run_dir):
    step, state = RunContext(run_dir, resume=True).resume()
    return step, {m: s["x0"] for m, s in state["server"].items()}, state["agents"]["methods"]["ssl_alm"]


def test_actor_sharded_rounds_equal_single_process_rounds(tmp_path, ray_local):
    cfg = config(tmp_path)
    problem, methods = cfg.problem(), cfg.methods + ["scaffold"]
    sharded, local = RayPool(problem, num_actors=2), LocalPool(problem, 1)
    servers = [Server.start(problem, make_methods(methods, cfg.alm, cfg.baselines, cfg.batch_size), pool, 12)
               for pool in (sharded, local)]
    try:
        assert len(set(sharded.node_ids())) == 1          # one node here; SPREAD places them on every node
        for t in range(12):
            for server, pool in zip(servers, (sharded, local)):
                server.round(pool, t)
        for m in methods:
            torch.testing.assert_close(servers[0].x0(m), servers[1].x0(m), atol=1e-10, rtol=0)
        states = [pool.gather_state()["methods"] for pool in (sharded, local)]
        torch.testing.assert_close(states[0]["ssl_alm"]["x"], states[1]["ssl_alm"]["x"], atol=1e-10, rtol=0)
        torch.testing.assert_close(states[0]["scaffold"]["c"], states[1]["scaffold"]["c"], atol=1e-10, rtol=0)
    finally:
        sharded.shutdown()


@pytest.mark.slow
def test_a_killed_agent_actor_is_replaced_and_the_run_ends_as_if_it_never_died(tmp_path, ray_local):
    # the uninterrupted reference runs in this process (equal to the sharded run, as the test above shows)
    clean_dir, clean = driver.run(config(tmp_path, single_process=True))
    # killed before round 8: the pool starts a new actor, every shard rolls back to the checkpoint of round 5
    faulty_dir, faulty = driver.run(config(tmp_path, faults={"kill_actor_at_round": 8, "actor": 1}))
    assert faulty["actor_restarts"] == 1 and clean["actor_restarts"] == 0
    rows_a, rows_b = read_metrics(clean_dir), read_metrics(faulty_dir)
    assert [r["step"] for r in rows_b] == [5, 10, 15, 20]
    for a, b in zip(rows_a, rows_b):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    (step_a, x0_a, agents_a), (step_b, x0_b, agents_b) = final_models(clean_dir), final_models(faulty_dir)
    assert step_a == step_b == 20
    for m in x0_a:
        torch.testing.assert_close(x0_a[m], x0_b[m], atol=1e-10, rtol=0)
    for key in ("x", "y", "z"):
        torch.testing.assert_close(agents_a[key], agents_b[key], atol=1e-10, rtol=0)
