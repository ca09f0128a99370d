"""The pure federated core (no Ray): random draws, availability, objectives, rounds, snapshots, the methods."""
import copy
import functools

import numpy as np
import pytest
import torch

from raylab.federated import rng
from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec
from raylab.federated.methods import AlmHyper
from raylab.federated.objectives import LeastSquares, Logistic, ModelSpec, TorchModule, mlp, smoothness
from raylab.federated.server import LocalPool, Server, restore, snapshot
from raylab.federated.simulate import make_methods
from raylab.federated.spec import Problem

LS = DataSpec(kind="least_squares", num_agents=10, dim=5, rows=20)


def ls_problem(p=1.0, kind="bernoulli", **avail):
    return Problem(data=LS, model=ModelSpec(name="least_squares"), availability=Availability(kind=kind, p=p, **avail),
                   dtype="float64")


def run(problem, names, rounds, shards=1, batch_size=None, alm=None, local=None):
    pool = LocalPool(problem, shards)
    server = Server.start(problem, make_methods(names, alm, local, batch_size), pool, rounds)
    for t in range(rounds):
        server.round(pool, t)
    return server, pool


def test_counter_based_hash_matches_the_reference_and_is_uniform():
    z = torch.tensor([0, 1, 12345, -7, 2 ** 62], dtype=torch.int64)
    expected = [rng._signed(rng.mix_int(int(v) & (2 ** 64 - 1))) for v in z]
    assert rng.mix(z).tolist() == expected
    u = rng.uniform(3, rng.AVAILABILITY, 5, torch.arange(20000), 4)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.005
    # a draw depends on the agent's id, not on which agents are asked along with it
    assert torch.equal(rng.uniform(3, 1, 5, torch.arange(100, 200), 4), u[100:200])
    assert not torch.equal(rng.uniform(4, 1, 5, torch.arange(100), 4), u[:100])


@pytest.mark.parametrize("kind", ["bernoulli", "heterogeneous", "markov"])
def test_every_pattern_connects_each_agent_with_its_marginal_probability(kind):
    avail = Availability(kind=kind, p=0.2, mean_on=4)
    agents = torch.arange(2000)
    state, seen = avail.init_state(agents, 1), []
    for t in range(300):
        connected, state = avail.step(t, agents, state, 1)
        seen.append(connected)
    seen = torch.stack(seen).double()
    p = avail.probabilities(agents, 1)
    # 600,000 draws: the overall rate is within a few standard errors of the mean marginal probability
    assert abs(float(seen.mean() - p.mean())) < (0.01 if kind == "markov" else 0.003)
    if kind == "heterogeneous":
        assert float(p.min()) >= 0.02 and float(p.max()) <= 0.5
        assert np.corrcoef(seen.mean(0), p)[0, 1] > 0.95
    if kind == "markov":   # bursts: a connected agent stays connected with probability 1 - 1/mean_on
        stay = (seen[1:] * seen[:-1]).sum() / seen[:-1].sum()
        assert abs(float(stay) - 0.75) < 0.01


def test_bad_availability_is_one_line_value_error():
    with pytest.raises(ValueError, match=r"p: must lie in \(0, 1\]"):
        Availability(p=0.0)
    with pytest.raises(ValueError, match="mean_on >= p / \\(1 - p\\)"):
        Availability(kind="markov", p=0.9, mean_on=2)
    with pytest.raises(ValueError, match="path: give it exactly when kind is arrays"):
        DataSpec(kind="arrays")


@pytest.mark.parametrize("objective, classes", [
    (LeastSquares(6), 0), (Logistic(6, 2, bias=False), 2), (Logistic(6, 4), 4),
    (TorchModule(functools.partial(mlp, hidden=5), 6, 3), 3), (TorchModule(mlp, 6, 0), 0)])
def test_closed_form_gradients_match_autograd_per_agent(objective, classes):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, objective.dim, generator=gen, dtype=torch.float64)
    X = torch.randn(3, 7, 6, generator=gen, dtype=torch.float64)
    Y = torch.randint(0, classes, (3, 7), generator=gen) if classes else torch.randn(3, 7, dtype=torch.float64)
    w = torch.rand(3, 7, generator=gen, dtype=torch.float64)
    loss, grad = objective.loss_grad(x, X, Y, w)
    for i in range(3):       # each agent alone, through autograd on the textbook loss
        xi = x[i:i + 1].clone().requires_grad_(True)
        reference = _autograd_loss(objective, xi, X[i:i + 1], Y[i:i + 1], w[i:i + 1])
        (g,) = torch.autograd.grad(reference, xi)
        torch.testing.assert_close(g[0], grad[i])
        torch.testing.assert_close(reference.detach(), loss[i])


def _autograd_loss(objective, x, X, Y, w):
    if isinstance(objective, TorchModule):         # the module itself, its parameters set from the row x
        module = copy.deepcopy(objective.module).double()
        params = dict(zip(objective.names, x[0].split(objective.sizes)))
        out = torch.func.functional_call(module, {k: v.view(s) for (k, v), s in zip(params.items(), objective.shapes)},
                                         (X[0],))
        if objective.classes:
            return (w[0] * torch.nn.functional.cross_entropy(out, Y[0], reduction="none")).sum()
        return (w[0] * 0.5 * (out[:, 0] - Y[0]) ** 2).sum()
    if isinstance(objective, LeastSquares):
        return 0.5 * (w * (torch.bmm(X, x[:, :, None])[:, :, 0] - Y) ** 2).sum()  # w = 1/n_i: the mean
    logits = objective._logits(x, X)
    if logits.shape[2] == 1:
        return (w * torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, :, 0], Y.double(), reduction="none")).sum()
    return (w * torch.nn.functional.cross_entropy(logits[0], Y[0], reduction="none")[None]).sum()


def test_smoothness_is_the_largest_eigenvalue_of_each_agents_hessian():
    problem = ls_problem()
    pool = LocalPool(problem)
    X, Y, w = pool.shards[0].samples(torch.arange(10), 0, 0, None)
    L = smoothness(LeastSquares(5), torch.zeros(10, 5, dtype=torch.float64), X, Y, w,
                   torch.randn(10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    exact = torch.linalg.eigvalsh(torch.einsum("anj,an,ank->ajk", X, w, X))[:, -1]
    assert bool((L <= exact * (1 + 1e-9)).all()) and bool((L >= 0.99 * exact).all())   # power iteration: from below


def test_stochastic_gradients_reach_a_neighbourhood_of_the_solution():
    problem = ls_problem(p=0.3)
    x_star = problem.solution()
    errors = []
    for tau in (0.05, 0.0125):      # constant steps: the neighbourhood shrinks with the step size
        server, _ = run(problem, ["ssl_alm"], 1500, batch_size=10, alm=AlmHyper(tau=tau))
        errors.append(float(torch.linalg.vector_norm(server.x0("ssl_alm") - x_star)))
    assert errors[1] < 0.6 * errors[0] < 0.1 * float(torch.linalg.vector_norm(x_star))


def test_sharding_does_not_change_the_run():
    problem = ls_problem(p=0.3, kind="markov", mean_on=3)
    methods = ["ssl_alm", "fedavg", "fedprox", "scaffold"]
    one, _ = run(problem, methods, 40, shards=1, batch_size=4)
    three, _ = run(problem, methods, 40, shards=3, batch_size=4)
    for m in methods:
        torch.testing.assert_close(one.x0(m), three.x0(m), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shards_write_files", [False, True])
def test_snapshot_restores_into_another_sharding_and_replays_identically(tmp_path, shards_write_files):
    problem = ls_problem(p=0.3, kind="markov", mean_on=3)
    methods = ["ssl_alm", "fedavg", "scaffold"]
    full, _ = run(problem, methods, 30, batch_size=4)
    half, half_pool = run(problem, methods, 15, shards=2, batch_size=4)
    snap = snapshot(half, half_pool, 15, tmp_path if shards_write_files else None)
    if shards_write_files:      # only file names in the snapshot; each shard wrote its own
        assert snap["agents"]["files"] == ["round-000000015-shard-0000.pt", "round-000000015-shard-0001.pt"]
    pool = LocalPool(problem, 4)
    server = Server.start(problem, make_methods(methods, None, None, 4), pool, 30)
    assert restore(server, pool, snap) == 15
    for t in range(15, 30):
        server.round(pool, t)
    for m in methods:
        torch.testing.assert_close(server.x0(m), full.x0(m), atol=1e-12, rtol=0)


def test_disconnected_agents_never_stall_a_round():
    # Markov bursts with p = 0.02 and mean_on = 1: most agents stay away for dozens of rounds, and in many
    # rounds nobody connects; every round still completes and FedAvg keeps its model when nobody came
    problem = ls_problem(p=0.02, kind="markov", mean_on=1)
    pool = LocalPool(problem, 2)
    server = Server.start(problem, make_methods(["ssl_alm", "fedavg"]), pool, 100)
    empty = 0
    for t in range(100):
        before = server.x0("fedavg").clone()
        info = server.round(pool, t)
        if info["fedavg"]["participants"] == 0:
            empty += 1
            assert torch.equal(server.x0("fedavg"), before)
        assert info["ssl_alm"]["participants"] == info["fedavg"]["participants"]
    assert 50 < empty < 100
    # the agents that were away all along still took their local steps
    assert bool((pool.shards[0].state["ssl_alm"]["x"] != 0).all())


def test_safeguard_resets_every_dual_when_the_global_norm_reaches_M_y():
    def y_norms(M_y):
        pool = LocalPool(ls_problem(p=0.5), 2)
        server = Server.start(pool.shards[0].problem, make_methods(["ssl_alm"], AlmHyper(eta=2.0, M_y=M_y)), pool, 4)
        norms = []
        for t in range(4):
            server.round(pool, t)
            norms.append(float(torch.linalg.vector_norm(torch.cat([s.state["ssl_alm"]["y"] for s in pool.shards]))))
        return norms, server

    free, _ = y_norms(None)
    assert 0 < free[1] < free[2]
    # a radius between the norms of rounds 1 and 2: the sharded norm reaches it in round 2, all duals reset
    guarded, server = y_norms((free[1] + free[2]) / 2)
    assert guarded[:2] == pytest.approx(free[:2], abs=0) and guarded[2] == 0.0
    assert guarded[3] < free[3]


def test_digits_are_split_with_label_skew_and_every_agent_holds_data():
    spec = DataSpec(kind="digits", num_agents=50, alpha=0.1)
    data = spec.build(0).agent_data(torch.arange(50))
    assert int(data.counts.min()) >= 1 and int(data.counts.sum()) == 1797 - round(0.2 * 1797)
    classes = [len(set(data.Y[i, : data.counts[i]].tolist())) for i in range(50)]
    assert np.mean(classes) < 5   # with alpha = 0.1 an agent sees few of the 10 classes


def test_the_federated_core_never_imports_ray():
    import subprocess
    import sys

    code = ("import sys, raylab.federated, raylab.federated.agents, raylab.federated.server, "
            "raylab.federated.methods, raylab.experiments.federated; "
            "sys.exit('ray imported' if 'ray' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
