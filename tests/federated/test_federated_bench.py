"""`raylab bench federated`: both sides compute the same local update, and the benchmark runs end to end.
(The speed figures themselves come from running the benchmark, never from tests.)"""
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


@pytest.mark.ray
@pytest.mark.slow
def test_the_benchmark_runs_and_writes_its_figures(tmp_path, ray_local, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--agents", "400", "--rounds", "2", "--alm-rounds", "1", "--flower-max-agents", "0",
                       "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["agents"] == 400 and row["updates"] > 0 and row["updates_per_s"] > 0
    # a shard holds p_i, the on/off state, x_i, y_i, z_i (32 floats each) and a row count per agent
    assert row["bytes_per_agent"] == pytest.approx(4 + 1 + 3 * 32 * 4 + 8)
    assert "raylab upd/s" in capsys.readouterr().out
