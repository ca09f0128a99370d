"""`raylab bench federated`: agent updates per second, raylab's sharded virtual agents against Flower's simulation.

    raylab bench federated                                   # 1,000, 10,000 and 1,000,000 agents (a few minutes)
    raylab bench federated --agents 1000 --flower-rounds 2   # a quick look

The workload of both sides: each agent holds 64 rows of 32 features and does 5 full-batch gradient steps of
logistic regression from the server's weights; the server averages (FedAvg). Participation is p = 0.1
(p = 0.01 for the million): raylab draws Bernoulli(p) per agent, Flower samples a fraction p of its clients.
raylab runs in this process on a local Ray instance with one actor per CPU, each hosting a shard of agents
vectorised in torch; Flower runs as a subprocess in its own environment (`.venv-flower`, `make flower-env`),
after raylab's Ray instance has shut down. Both count the client updates of the rounds after the first.
Also measured: SSL-ALM rounds, in which every agent (connected or not) takes a step, memory per agent (state
and data a shard holds) and the peak resident memory of the actors. Results go to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"


def participation(agents: int) -> float:
    return 0.01 if agents >= 1_000_000 else 0.1


def measure_raylab(agents: int, rounds: int, alm_rounds: int, cpus: int) -> dict:
    from raylab.federated.availability import Availability
    from raylab.federated.data import DataSpec
    from raylab.federated.server import Server
    from raylab.federated.simulation import RayPool
    from raylab.federated.spec import Hyper, Problem

    p = participation(agents)
    problem = Problem(data=DataSpec(name="synthetic", num_agents=agents, dim=32, rows=64), model="logistic",
                      bias=False, availability=Availability(p=p))
    hyper = Hyper(batch_size=None, local_steps=5, local_lr=0.1, tau=0.05, rho=0.1, eta=0.005,
                  server_lr_scale=1.0 / agents)
    started = time.perf_counter()
    pool = RayPool(problem, hyper, ("fedavg", "ssl_alm"), num_actors=cpus, cpus_per_actor=1)
    setup = time.perf_counter() - started
    try:
        fedavg, alm = Server(problem, hyper, ("fedavg",)), Server(problem, hyper, ("ssl_alm",))
        fedavg.round(pool, 0)                                  # warm-up, as Flower's first round
        t0, updates = time.perf_counter(), 0
        for t in range(1, rounds + 1):
            updates += fedavg.round(pool, t)["fedavg"]["participants"]
        fedavg_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in range(rounds + 1, rounds + 1 + alm_rounds):
            alm.round(pool, t)
        alm_seconds = time.perf_counter() - t0
        per_agent = sum(b * n for b, n in zip(pool.map("bytes_per_agent"), pool.sizes)) / agents
        peak = sum(pool.peak_memory())
    finally:
        pool.shutdown()
    return {"agents": agents, "p": p, "setup_seconds": setup, "rounds": rounds, "updates": updates,
            "updates_per_s": updates / fedavg_seconds, "alm_rounds": alm_rounds,
            "alm_agent_updates_per_s": agents * alm_rounds / alm_seconds, "alm_seconds_per_round":
            alm_seconds / alm_rounds, "bytes_per_agent": per_agent, "actors_peak_rss_bytes": peak}


def measure_flower(agents: int, rounds: int, cpus: int) -> dict:
    cmd = [str(FLOWER_PYTHON), str(ROOT / "raylab" / "bench" / "flower_side.py"), "--clients", str(agents),
           "--rounds", str(rounds), "--fraction", str(participation(agents)), "--cpus", str(cpus)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"agents": agents, "error": f"flower_side.py exited {done.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="raylab bench federated", description=__doc__.splitlines()[0])
    ap.add_argument("--agents", default="1000,10000,1000000", help="comma-separated numbers of agents")
    ap.add_argument("--rounds", type=int, default=10, help="timed FedAvg rounds on raylab's side")
    ap.add_argument("--alm-rounds", type=int, default=3, help="timed SSL-ALM rounds (every agent steps)")
    ap.add_argument("--flower-rounds", type=int, default=2, help="Flower rounds (the first is not timed)")
    ap.add_argument("--flower-max-agents", type=int, default=10_000, help="larger sizes run raylab only")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_federated.json")
    ap.add_argument("--figure", help="also draw the updates per second as a PNG here")
    args = ap.parse_args(argv)
    sizes = [int(a) for a in args.agents.split(",")]
    if any(a < 1 for a in sizes):
        raise ValueError(f"--agents: need positive numbers (got {args.agents})")

    import ray
    import torch

    torch.set_num_threads(1)
    rows = []
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        for agents in sizes:
            big = agents >= 1_000_000
            rows.append(measure_raylab(agents, max(2, args.rounds // 2) if big else args.rounds,
                                       1 if big else args.alm_rounds, args.cpus))
            print(f"raylab  {agents:>9,} agents: {rows[-1]['updates_per_s']:>12,.0f} FedAvg updates/s", flush=True)
    finally:
        if started_ray:
            ray.shutdown()
    flower_ok = FLOWER_PYTHON.exists()
    if not flower_ok:
        print("Flower baseline skipped: .venv-flower is missing; create it with `make flower-env`")
    for row in rows:
        if flower_ok and row["agents"] <= args.flower_max_agents:
            row["flower"] = measure_flower(row["agents"], args.flower_rounds, args.cpus)
            rate = row["flower"].get("updates_per_s")
            print(f"Flower  {row['agents']:>9,} agents: " + (f"{rate:>12,.1f} updates/s" if rate else
                                                               row["flower"]["error"]), flush=True)
    print(table(rows))
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "driver_peak_rss_bytes": driver_peak, "cpus": args.cpus}, indent=2))
    print(f"driver peak memory {driver_peak / 2**20:,.0f} MiB; results: {out}")
    if args.figure:
        plot(rows, Path(args.figure))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """Bars of client updates per second (log scale): raylab FedAvg, raylab SSL-ALM, Flower FedAvg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['agents']:,}\np={r['p']}" for r in rows]
    bars = {"raylab FedAvg (5 steps)": [r["updates_per_s"] for r in rows],
            "raylab SSL-ALM (1 step, every agent)": [r["alm_agent_updates_per_s"] for r in rows],
            "Flower FedAvg": [r.get("flower", {}).get("updates_per_s", 0) for r in rows]}
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    width = 0.8 / len(bars)
    for k, (name, values) in enumerate(bars.items()):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar(xs, [v or float("nan") for v in values], width, label=name)
    ax.set_xticks(range(len(rows)), labels)
    ax.set(yscale="log", ylabel="client updates per second", xlabel="virtual agents",
           title="logistic regression, 64 rows x 32 features per agent, 2 CPUs")
    ax.grid(alpha=0.3, axis="y")
    ax.set_ylim(top=30 * max(v for values in bars.values() for v in values))
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    head = (f"{'agents':>10} {'p':>5} {'raylab upd/s':>13} {'Flower upd/s':>13} {'ratio':>8} "
            f"{'SSL-ALM upd/s':>14} {'B/agent':>8} {'actors peak':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        flower = r.get("flower", {}).get("updates_per_s")
        flower_cell, ratio_cell = (f"{flower:,.1f}", f"{r['updates_per_s'] / flower:,.0f}x") if flower else ("n/a",) * 2
        lines.append(f"{r['agents']:>10,} {r['p']:>5} {r['updates_per_s']:>13,.0f} {flower_cell:>13} {ratio_cell:>8} "
                     f"{r['alm_agent_updates_per_s']:>14,.0f} {r['bytes_per_agent']:>8,.0f} "
                     f"{r['actors_peak_rss_bytes'] / 2**20:>9,.0f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
