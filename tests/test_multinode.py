"""The multi-node path on one machine: a real 2-node Ray cluster (ray.cluster_utils.Cluster, 1 CPU per node, a
job server on the head). `raylab run --address` of the toy experiment (its noise drawn by 2 actors) and of the
federated experiment, a 4-trial `raylab tune --address`, and `ray job submit` of `raylab run`: actors and trials
land on both nodes, and the metrics equal a local run's."""
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raylab import driver
from raylab.config import load_config
from raylab.results import read_metrics

ROOT = Path(__file__).parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The cluster, with its own Ray temp dir: Cluster records its address in the temp dir's
    ray_current_cluster, where any other `ray.init()` on this machine would find and join it."""
    import tempfile

    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    keys = ("RAY_TMPDIR", "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT")
    previous = {key: os.environ.get(key) for key in keys}
    os.environ["RAY_TMPDIR"] = temp
    # the dashboard's modules get 30 s to start by default, too little on a loaded 2-core machine
    os.environ["RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT"] = "180"
    dashboard = free_port()
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
                                "dashboard_port": dashboard,
                                # the job agent's default port (52365) may be held by another Ray on the machine
                                "dashboard_agent_listen_port": free_port()})
    c.add_node(num_cpus=1)
    c.dashboard_url = f"http://127.0.0.1:{dashboard}"
    yield c
    c.shutdown()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def raylab(*args, cwd, timeout=300):
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "raylab.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def only_run(out: Path) -> Path:
    (run_dir,) = out.iterdir()
    return run_dir


def toy_yaml(tmp_path, **extra) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"experiment": "toy_experiment", "steps": 6, "lr": 0.3, "actors": 2,
                                    "progress": False, **extra}))
    return path


def test_toy_run_and_sweep_on_two_nodes_equal_local_runs(cluster, ray_local, tmp_path):
    path = toy_yaml(tmp_path)
    local, _ = driver.run(load_config(path, [f"output_dir={tmp_path / 'local'}"]))  # this process's local Ray
    raylab("run", path, "--address", cluster.address, f"output_dir={tmp_path / 'remote'}", cwd=tmp_path)
    remote = only_run(tmp_path / "remote")
    assert read_metrics(remote) == read_metrics(local)
    nodes = json.loads((remote / "summary.json").read_text())["actor_nodes"]
    assert len(nodes) == 2, "the two actors must run on two nodes"

    sweep = {"metric": "loss", "mode": "min", "cpus_per_trial": 1,
             "space": {"lr": {"grid": [0.3, 0.5]}, "seed": {"grid": [0, 1]}}}
    path = toy_yaml(tmp_path, sweep=sweep)
    raylab("tune", path, f"output_dir={tmp_path / 'sweep'}", "--address", cluster.address, cwd=tmp_path)
    out = only_run(tmp_path / "sweep")
    assert [r["status"] for r in csv.DictReader((out / "trials.csv").open())] == ["completed"] * 4
    runs = {}
    for d in out.glob("tune/*/run"):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        runs[(cfg["lr"], cfg["seed"])] = d
    assert len(runs) == 4
    trial_nodes = {json.loads((d / "summary.json").read_text())["run_node"] for d in runs.values()}
    assert trial_nodes == set(nodes), "trials must run on both nodes"
    assert read_metrics(runs[(0.3, 0)]) == read_metrics(local)


def federated_yaml() -> Path:
    return ROOT / "experiments" / "federated_digits.yaml"  # public keys only: rounds, eval_every, methods, ...


def actor_nodes(address: str, class_suffix: str) -> set[str]:
    script = ("import json, ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
              "from ray._private.state import actors; "
              "print(json.dumps(sorted({a['Address']['NodeID'] for a in actors().values() "
              "if a['ActorClassName'].endswith(sys.argv[2])})))")
    proc = subprocess.run([sys.executable, "-c", script, address, class_suffix], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_federated_run_on_two_nodes_equals_a_local_run(cluster, ray_local, tmp_path):
    small = ["rounds=4", "eval_every=2", "methods=[ssl_alm]", "num_actors=2", "checkpoint_every=0",
             "progress=false"]
    driver.run(load_config(federated_yaml(), [*small, f"output_dir={tmp_path / 'local'}"]))
    raylab("run", federated_yaml(), *small, "--address", cluster.address, f"output_dir={tmp_path / 'remote'}",
           cwd=tmp_path)
    def strip(rows):  # wall-clock timings differ between any two runs
        return [{k: v for k, v in r.items() if "time" not in k and "seconds" not in k} for r in rows]

    assert strip(read_metrics(only_run(tmp_path / "remote"))) == strip(read_metrics(only_run(tmp_path / "local")))
    assert len(actor_nodes(cluster.address, "ShardActor")) == 2


def test_ray_job_submit_runs_raylab_on_the_cluster(cluster, tmp_path):
    path = toy_yaml(tmp_path, output_dir=str(tmp_path / "job"))
    ray_cli = Path(sys.executable).with_name("ray")
    deadline = time.monotonic() + 60
    while True:  # the head's job agent comes up after the cluster does (seconds)
        proc = subprocess.run([str(ray_cli), "job", "submit", "--address", cluster.dashboard_url, "--",
                               sys.executable, "-m", "raylab.cli", "run", str(path)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "RAY_ADDRESS": ""})
        if "No available agent" not in proc.stderr + proc.stdout or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "results: " in proc.stdout and "succeeded" in proc.stdout
    run_dir = only_run(tmp_path / "job")
    assert len(json.loads((run_dir / "summary.json").read_text())["actor_nodes"]) == 2
