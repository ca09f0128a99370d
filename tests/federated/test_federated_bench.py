"""`raylab bench federated`: both sides compute the same local update, the Flower environment is found or named
in one line, and the benchmark runs end to end. (The speed figures come from running the bench, never tests.)"""
import json

import numpy as np
import pytest
import torch

from raylab.bench import federated as bench
from raylab.bench.flower_side import client_data, local_update
from raylab.federated.objectives import Logistic


def test_flower_clients_do_the_same_local_update_as_raylab_agents():
    X, y = client_data(cid=7, rows=64, features=32, seed=0)
    w0 = np.random.default_rng(1).standard_normal(32).astype(np.float32)
    flower = local_update(w0, X, y, steps=5, lr=0.1)
    objective, w = Logistic(32, 2, bias=False), torch.tensor(w0)[None]
    Xt, yt, weights = torch.tensor(X)[None], torch.tensor(y)[None], torch.full((1, 64), 1 / 64)
    for _ in range(5):
        w = w - 0.1 * objective.loss_grad(w, Xt, yt, weights)[1]
    np.testing.assert_allclose(w[0].numpy(), flower, rtol=1e-4, atol=1e-5)


def test_a_missing_flower_environment_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAYLAB_FLOWER_PYTHON", raising=False)
    with pytest.raises(ValueError, match="--flower-python: not given and RAYLAB_FLOWER_PYTHON is not set"):
        bench.flower_python(None)
    monkeypatch.setenv("RAYLAB_FLOWER_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ValueError, match="--flower-python: no such interpreter"):
        bench.flower_python(None)


def test_the_target_and_gradient_parts_write_a_run_directory(tmp_path):
    assert bench.main(["--parts", "target,gradients", "--max-rounds", "600", "--grad-agents", "300",
                       "--grad-rounds", "2", "--output-dir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    rounds = {r["method"]: r["rounds"] for r in results["target"]}
    assert rounds["ssl_alm"] and rounds["scaffold"] and rounds["fedavg"] is None   # drift: FedAvg never gets there
    assert results["gradients"]["raylab_grad_per_s"] > 0 and results["gradients"]["numpy_grad_per_s"] > 0
    assert "raylab / numpy" in (run_dir / "results.md").read_text()
    assert json.loads((run_dir / "settings.json").read_text())["machine"]["load_avg_1m"] >= 0


@pytest.mark.ray
@pytest.mark.slow
def test_the_throughput_part_runs_on_actors(tmp_path, ray_local):
    assert bench.main(["--parts", "throughput", "--agents", "400", "--rounds", "2", "--alm-rounds", "1",
                       "--no-flower", "--output-dir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    (row,) = json.loads((run_dir / "results.json").read_text())["throughput"]
    assert row["agents"] == 400 and row["updates"] > 0 and row["updates_per_s"] > 0
    # a shard holds p_i, the on/off state, SSL-ALM's x, y, z, anchor, sent x and y (32 floats each), the agent's
    # 64 pool-row indices (int32) and its row count
    assert row["bytes_per_agent"] == pytest.approx(4 + 1 + 6 * 32 * 4 + 64 * 4 + 8)
