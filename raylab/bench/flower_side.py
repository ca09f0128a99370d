"""Flower's half of `raylab bench federated`: the same local update in Flower's simulation engine.

Runs in Flower's own environment (numpy and flwr only, no torch, no raylab):

    .venv-flower/bin/python raylab/bench/flower_side.py --clients 1000 --rounds 3

Each client holds 64 rows of 32 features (binary labels from a planted model, generated from its id) and does 5
full-batch gradient steps of logistic regression from the server's weights; FedAvg samples a fraction 0.1 of the
clients per round. Prints one JSON line: client updates per second over the rounds after the first (the first
pays for starting Ray and the virtual clients), and this process's peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def client_data(cid: int, rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.default_rng([seed, cid])
    X = rs.standard_normal((rows, features)).astype(np.float32)
    w_true = np.random.default_rng([seed, 10**9]).standard_normal(features).astype(np.float32)
    y = (X @ w_true + 0.1 * rs.standard_normal(rows) > 0).astype(np.float32)
    return X, y


def local_update(w: np.ndarray, X: np.ndarray, y: np.ndarray, steps: int, lr: float) -> np.ndarray:
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        w = w - lr * (X.T @ (p - y)) / len(y)
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    class LogisticClient(NumPyClient):
        def __init__(self, cid: int):
            self.X, self.y = client_data(cid, args.rows, args.features, args.seed)

        def fit(self, parameters, config):
            w = local_update(parameters[0], self.X, self.y, args.local_steps, args.lr)
            return [w], len(self.y), {}

    round_ends: list[tuple[float, int]] = []

    class TimedFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            round_ends.append((time.perf_counter(), len(results)))
            return super().aggregate_fit(server_round, results, failures)

    def client_fn(context: Context):
        return LogisticClient(int(context.node_config["partition-id"])).to_client()

    def server_fn(context: Context):
        strategy = TimedFedAvg(fraction_fit=args.fraction, fraction_evaluate=0.0, min_fit_clients=1,
                               min_evaluate_clients=0, min_available_clients=args.clients,
                               initial_parameters=ndarrays_to_parameters([np.zeros(args.features, np.float32)]))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    start = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=args.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": args.cpus, "include_dashboard": False}})
    total = time.perf_counter() - start
    timed = round_ends[1:] if len(round_ends) > 1 else round_ends
    seconds = timed[-1][0] - (round_ends[0][0] if len(round_ends) > 1 else start)
    updates = sum(n for _, n in timed)
    print(json.dumps({"clients": args.clients, "rounds": len(round_ends), "updates": updates,
                      "seconds": seconds, "updates_per_s": updates / seconds if seconds > 0 else 0.0,
                      "total_seconds": total,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
