"""`raylab bench federated`: rounds and time to a target per method, gradient throughput against a plain numpy
loop, and client updates per second against Flower's simulation.

    raylab bench federated                                      # all three parts (minutes; Flower if found)
    raylab bench federated --parts target,gradients --agents 1000
    raylab bench federated --flower-python .venv-flower/bin/python   # or RAYLAB_FLOWER_PYTHON

1. target: the demo's client-drift problem (100 agents, least squares, d = 10, heterogeneity 1, p = 0.1,
   full-batch gradients, default step sizes) run in this process; per method the first round whose server model
   is within --target of the closed-form x*, and the wall time of the rounds up to it (the distance is checked
   outside the timed rounds). A method that does not get there within --max-rounds says so.
2. gradients: agent-gradient evaluations per second (one unit = the full-batch gradient of one agent's logistic
   loss on 64 rows x 32 features) of SSL-ALM rounds on --grad-agents synthetic agents in one in-process shard,
   against a plain vectorised numpy loop doing the same arithmetic on pre-gathered arrays (the bare-metal limit:
   no connection draws, no data gather, no framework).
3. throughput: per --agents size, raylab's FedAvg client updates per second on one Ray actor per CPU (one unit =
   5 full-batch gradient steps of one client, 64 x 32 logistic), SSL-ALM seconds per round (every agent steps),
   memory per agent; and Flower's FedAvg client updates per second on the same workload, run as a subprocess in
   its own environment after raylab's Ray instance has shut down. The ratio measures per-client framework
   overhead: both sides do the same arithmetic per client, Flower through one NumPyClient call per client.
Participation is p = 0.1 (p = 0.01 at a million agents). Results: a run directory (settings.json, results.json,
results.md) under --output-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from raylab.bench.common import add_bench_args, bench_run, finish, markdown_table

FLOWER_SIDE = Path(__file__).with_name("flower_side.py")
FEATURES, ROWS, LOCAL_STEPS, LOCAL_LR = 32, 64, 5, 0.1
PARTS = ("target", "gradients", "throughput")


def participation(agents: int) -> float:
    return 0.01 if agents >= 1_000_000 else 0.1


def flower_python(option: str | None) -> Path:
    """The Flower environment's python: --flower-python, else $RAYLAB_FLOWER_PYTHON; one-line error if missing."""
    value = option or os.environ.get("RAYLAB_FLOWER_PYTHON")
    if not value:
        raise ValueError("--flower-python: not given and RAYLAB_FLOWER_PYTHON is not set (create the environment "
                         "with `make flower-env`, then pass .venv-flower/bin/python), or leave out the "
                         "throughput part's Flower side with --no-flower")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"--flower-python: no such interpreter {str(path)!r}")
    return path


# --- 1. rounds and time to a target distance ---------------------------------------------------------------------
def to_target(target: float, max_rounds: int, methods: list[str]) -> list[dict]:
    """The demo's problem (experiments/federated_alm.yaml), each method with its default steps."""
    import torch

    from raylab.federated.availability import Availability
    from raylab.federated.data import DataSpec
    from raylab.federated.objectives import ModelSpec
    from raylab.federated.server import LocalPool, Server
    from raylab.federated.simulate import make_methods
    from raylab.federated.spec import Problem

    torch.set_num_threads(1)
    problem = Problem(data=DataSpec(kind="least_squares", num_agents=100, dim=10, rows=20, heterogeneity=1.0,
                                    noise=0.1), model=ModelSpec(name="least_squares"),
                      availability=Availability(p=0.1), dtype="float64")
    rows = []
    for name in methods:
        pool = LocalPool(problem)
        server = Server.start(problem, make_methods([name]), pool, max_rounds)
        seconds, reached = 0.0, None
        for t in range(max_rounds):
            began = time.perf_counter()
            server.round(pool, t)
            seconds += time.perf_counter() - began
            if float((server.x0(name).double() - server.solution).norm()) < target:
                reached = t + 1
                break
        rows.append({"method": name, "target": target, "rounds": reached, "seconds": seconds if reached else None,
                     "seconds_per_round": seconds / (t + 1), "agents": problem.num_agents,
                     "p": problem.availability.p})
    return rows


# --- 2. gradient evaluations per second against plain numpy -------------------------------------------------------
def synthetic(agents: int, p: float):
    from raylab.federated.availability import Availability
    from raylab.federated.data import DataSpec
    from raylab.federated.objectives import ModelSpec
    from raylab.federated.spec import Problem

    return Problem(data=DataSpec(kind="synthetic", num_agents=agents, dim=FEATURES, rows=ROWS),
                   model=ModelSpec(name="logistic", bias=False), availability=Availability(p=p))


def alm_method(batch_size=None):
    from raylab.federated.methods import AlmHyper, SslAlm

    return SslAlm(AlmHyper(eta=0.005, tau=0.05, rho=0.1, mu=0.05), batch_size)


def gradient_rates(agents: int, rounds: int) -> dict:
    import numpy as np
    import torch

    from raylab.federated.server import LocalPool, Server

    torch.set_num_threads(1)
    problem = synthetic(agents, 0.1)
    pool = LocalPool(problem)
    server = Server.start(problem, [alm_method()], pool, rounds + 1)
    server.round(pool, 0)                                               # warm-up
    began = time.perf_counter()
    for t in range(1, rounds + 1):
        server.round(pool, t)
    raylab_rate = agents * rounds / (time.perf_counter() - began)

    # the same arithmetic in numpy on pre-gathered arrays: per round one full-batch logistic gradient per agent
    # and SSL-ALM's vector updates (dual, primal, prox centre), with a fixed connection mask
    shard = pool.shards[0]
    X, Y, _ = shard.data.gather(shard.everyone)
    X, Y = X.numpy(), Y.numpy()
    x = np.zeros((agents, FEATURES), np.float32)
    y, z, anchor = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    connected = np.random.default_rng(0).random(agents) < 0.1
    x0 = np.zeros(FEATURES, np.float32)
    began = time.perf_counter()
    for _ in range(rounds):
        anchor[connected] = x0
        v = x - anchor
        y += 0.005 * v
        s = np.einsum("anf,af->an", X, x)
        g = np.einsum("anf,an->af", X, 1 / (1 + np.exp(-s)) - Y) / ROWS
        x_new = x - 0.05 * (g + y + 0.1 * v + 0.05 * (x - z))
        z += 0.5 * (x - z)
        x = x_new
        x0 = x0 + 0.05 / agents * (y.sum(0) + 0.1 * v.sum(0))
    numpy_rate = agents * rounds / (time.perf_counter() - began)
    return {"agents": agents, "rounds": rounds, "raylab_grad_per_s": raylab_rate, "numpy_grad_per_s": numpy_rate,
            "fraction_of_numpy": raylab_rate / numpy_rate}


# --- 3. client updates per second on Ray actors, and Flower --------------------------------------------------------
def measure_raylab(agents: int, rounds: int, alm_rounds: int, cpus: int | None) -> dict:
    from raylab.federated.actors import RayPool
    from raylab.federated.methods import FedAvg, LocalHyper
    from raylab.federated.server import Server

    p = participation(agents)
    problem = synthetic(agents, p)
    started = time.perf_counter()
    pool = RayPool(problem, num_actors=cpus, cpus_per_actor=1)
    setup = time.perf_counter() - started
    try:
        fedavg = FedAvg(LocalHyper(local_steps=LOCAL_STEPS, local_lr=LOCAL_LR), None)
        server = Server.start(problem, [fedavg, alm_method()], pool, rounds + alm_rounds + 1)
        fedavg_round, alm_round = server.methods["fedavg"].round, server.methods["ssl_alm"].round
        fedavg_round(server, pool, 0)                                   # warm-up, as Flower's first round
        t0, updates = time.perf_counter(), 0
        for t in range(1, rounds + 1):
            updates += fedavg_round(server, pool, t)["participants"]
        fedavg_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in range(rounds + 1, rounds + 1 + alm_rounds):
            alm_round(server, pool, t)
        alm_seconds = time.perf_counter() - t0
        per_agent = sum(b * n for b, n in zip(pool.map("bytes_per_agent"), pool.sizes)) / agents
        peak = sum(pool.peak_memory())
        nodes = len(set(pool.node_ids()))
    finally:
        pool.shutdown()
    return {"agents": agents, "p": p, "actors": len(pool.sizes), "nodes": nodes, "setup_seconds": setup,
            "rounds": rounds, "updates": updates, "updates_per_s": updates / fedavg_seconds,
            "alm_rounds": alm_rounds, "alm_seconds_per_round": alm_seconds / alm_rounds,
            "bytes_per_agent": per_agent, "actors_peak_rss_bytes": peak}


def measure_flower(python: Path, agents: int, rounds: int, cpus: int) -> dict:
    cmd = [str(python), str(FLOWER_SIDE), "--clients", str(agents), "--rounds", str(rounds),
           "--fraction", str(participation(agents)), "--cpus", str(cpus), "--rows", str(ROWS),
           "--features", str(FEATURES), "--local-steps", str(LOCAL_STEPS), "--lr", str(LOCAL_LR)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"flower_side.py exited {done.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="raylab bench federated", description=__doc__.splitlines()[0])
    add_bench_args(ap)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--target", type=float, default=1e-6, help="target: distance ||x_0 - x*||")
    ap.add_argument("--max-rounds", type=int, default=3000, help="target: rounds before giving up")
    ap.add_argument("--grad-agents", type=int, default=10_000, help="gradients: synthetic agents")
    ap.add_argument("--grad-rounds", type=int, default=5, help="gradients: timed SSL-ALM rounds")
    ap.add_argument("--agents", default="1000,10000,1000000", help="throughput: comma-separated sizes")
    ap.add_argument("--rounds", type=int, default=10, help="throughput: timed FedAvg rounds (half at 1e6)")
    ap.add_argument("--alm-rounds", type=int, default=3, help="throughput: timed SSL-ALM rounds (1 at 1e6)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance; one actor per CPU")
    ap.add_argument("--flower-python", help="the Flower environment's python (else $RAYLAB_FLOWER_PYTHON)")
    ap.add_argument("--no-flower", action="store_true", help="throughput: raylab's side only")
    ap.add_argument("--flower-rounds", type=int, default=2, help="Flower rounds (the first is not timed)")
    ap.add_argument("--flower-max-agents", type=int, default=10_000, help="larger sizes run raylab only")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"--parts: expected some of {','.join(PARTS)} (got {args.parts!r})")
    sizes = [int(a) for a in args.agents.split(",")]
    if any(a < 1 for a in sizes):
        raise ValueError(f"--agents: need positive numbers (got {args.agents})")
    flower = None
    if "throughput" in parts and not args.no_flower:
        flower = flower_python(args.flower_python)
    settings = {**vars(args), "flower_python": str(flower) if flower else None, "features": FEATURES,
                "rows": ROWS, "local_steps": LOCAL_STEPS, "local_lr": LOCAL_LR}
    results, tables = {}, []
    with bench_run("federated", args, settings, ray_cpus=args.cpus, use_ray="throughput" in parts) as ctx:
        if "target" in parts:
            rows = to_target(args.target, args.max_rounds, ["ssl_alm", "fedavg", "fedprox", "scaffold"])
            results["target"] = rows
            tables.append(f"Rounds and seconds to ||x_0 - x*|| < {args.target:g} (100 agents, p = 0.1, full batch)\n\n"
                          + markdown_table(["method", "rounds", "seconds", "s/round"],
                                           [[r["method"], r["rounds"] or f"> {args.max_rounds}",
                                             r["seconds"] if r["seconds"] is not None else "n/a",
                                             r["seconds_per_round"]] for r in rows]))
        if "gradients" in parts:
            row = gradient_rates(args.grad_agents, args.grad_rounds)
            results["gradients"] = row
            tables.append("Agent-gradient evaluations per second (one = full-batch logistic gradient, 64 x 32), "
                          "SSL-ALM rounds, one thread\n\n" + markdown_table(
                              ["agents", "raylab grad/s", "numpy loop grad/s", "raylab / numpy"],
                              [[row["agents"], row["raylab_grad_per_s"], row["numpy_grad_per_s"],
                                row["fraction_of_numpy"]]]))
        if "throughput" in parts:
            rows = []
            for agents in sizes:
                big = agents >= 1_000_000
                rows.append(measure_raylab(agents, max(2, args.rounds // 2) if big else args.rounds,
                                           1 if big else args.alm_rounds, args.cpus))
                print(f"raylab {agents:>9,} agents: {rows[-1]['updates_per_s']:>12,.0f} FedAvg client updates/s, "
                      f"SSL-ALM {rows[-1]['alm_seconds_per_round']:.2f} s/round", flush=True)
            results["throughput"] = rows
    if "throughput" in parts:                  # Flower after raylab's Ray instance has shut down
        for row in results["throughput"]:
            if flower is not None and row["agents"] <= args.flower_max_agents:
                row["flower"] = measure_flower(flower, row["agents"], args.flower_rounds, args.cpus)
        tables.append("Client updates per second (one = 5 full-batch gradient steps of one client, 64 x 32 "
                      "logistic); SSL-ALM: every agent steps each round\n\n" + markdown_table(
                          ["agents", "p", "raylab FedAvg upd/s", "Flower upd/s", "ratio", "SSL-ALM s/round",
                           "B/agent", "actors peak MiB"],
                          [[r["agents"], r["p"], r["updates_per_s"], _flower_cell(r),
                            _ratio(r), r["alm_seconds_per_round"], r["bytes_per_agent"],
                            r["actors_peak_rss_bytes"] / 2**20] for r in results["throughput"]]))
    finish(ctx, results, "\n\n".join(tables))
    return 0


def _flower_cell(row: dict):
    flower = row.get("flower")
    if flower is None:
        return "not run"
    return flower.get("updates_per_s", flower.get("error", "n/a"))


def _ratio(row: dict):
    rate = (row.get("flower") or {}).get("updates_per_s")
    return f"{row['updates_per_s'] / rate:.0f}x" if rate else "n/a"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
