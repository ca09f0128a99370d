"""Issue 11's least-squares problem: 50 agents, d = 10, heterogeneous f_i(x) = 1/(2 n_i) ||A_i x - b_i||^2,
full-batch gradients, consensus optimum x* in closed form. With DEFAULT hyper-parameters (from p and the data's
smoothness) SSL-ALM reaches x* under every availability pattern, bursty Markov included; FedAvg and FedProx
stall (client drift); SCAFFOLD, the standard cure for drift, reaches x* too."""
import numpy as np
import pytest

from raylab.federated import ArrayData, simulate


def heterogeneous_least_squares(m=50, d=10, seed=0) -> ArrayData:
    rs = np.random.RandomState(seed)
    common = rs.randn(d)
    features, targets = [], []
    for i in range(m):
        A = rs.randn(15 + i % 10, d)                     # ragged: n_i from 15 to 24
        features.append(A)
        targets.append(A @ (common + rs.randn(d)) + 0.1 * rs.randn(len(A)))
    return ArrayData(features, targets)


DATA = heterogeneous_least_squares()
X_STAR = DATA.least_squares_solution()


@pytest.mark.parametrize("availability, rounds", [
    ({"kind": "bernoulli", "p": 1.0}, 600),
    ({"kind": "bernoulli", "p": 0.3}, 1000),
    ({"kind": "bernoulli", "p": 0.1}, 2000),
    ({"kind": "heterogeneous", "p_min": 0.05, "p_max": 0.5}, 3000),
    ({"kind": "markov", "p": 0.1, "mean_on": 5}, 3000),
])
def test_ssl_alm_with_default_steps_converges_to_the_consensus_optimum(availability, rounds):
    result = simulate(DATA, model="least_squares", method="ssl_alm", rounds=rounds, seed=0,
                      availability=availability, batch_size=None, eval_every=rounds)
    assert np.linalg.norm(result.x - X_STAR) < 1e-8 * np.linalg.norm(X_STAR)


def test_the_unbiased_residual_diverges_under_markov_bursts_and_the_held_one_does_not():
    """The mechanism (docs/federated.md): with (c_i / p) weights a burst of connected rounds hands the dual
    mean_on weights of 1/p before x_i can respond. The same steps converge under i.i.d. Bernoulli p."""
    steps = {"eta": 0.05, "tau": 0.2, "rho": 0.4, "mu": 0.5}
    kw = dict(model="least_squares", rounds=1500, batch_size=None, eval_every=1500)
    bernoulli = simulate(DATA, availability={"p": 0.1}, hyper=steps | {"residual": "unbiased"}, **kw)
    assert np.linalg.norm(bernoulli.x - X_STAR) < 1e-6
    markov = {"kind": "markov", "p": 0.1, "mean_on": 5}
    unbiased = simulate(DATA, availability=markov, hyper=steps | {"residual": "unbiased"}, **kw)
    held = simulate(DATA, availability=markov, hyper=steps, **kw)
    assert np.linalg.norm(unbiased.x - X_STAR) > 1.0
    assert np.linalg.norm(held.x - X_STAR) < 1e-4


def test_client_drift_stalls_fedavg_and_fedprox_but_not_scaffold():
    result = simulate(DATA, model="least_squares", method=["ssl_alm", "fedavg", "fedprox", "scaffold"], rounds=1000,
                      availability={"p": 0.3}, batch_size=None, eval_every=1000)
    distance = {m: np.linalg.norm(x - X_STAR) for m, x in result.models.items()}
    assert distance["ssl_alm"] < 1e-8 and distance["scaffold"] < 1e-8
    assert distance["fedavg"] > 1e-2 and distance["fedprox"] > 1e-2


def test_fedavg_with_all_agents_and_one_local_step_is_gradient_descent_with_the_server_lr():
    # one full-batch local step from x_0 and a server step of server_lr: x_0 - server_lr * lr * mean_i grad f_i
    lr, server_lr = 0.05, 0.5
    result = simulate(DATA, method="fedavg", rounds=1, availability={"p": 1.0}, eval_every=1,
                      hyper={"local_steps": 1, "local_lr": lr, "server_lr": server_lr})
    grad = -sum(A.T @ b / len(A) for A, b in zip(DATA.features, DATA.targets)) / DATA.num_agents
    np.testing.assert_allclose(result.x, -server_lr * lr * grad, rtol=1e-12, atol=1e-14)


def test_sample_weighting_targets_the_sample_weighted_optimum():
    # weighting by n_i: FedAvg's fixed point at one local step is the optimum of sum_i n_i f_i
    result = simulate(DATA, method="fedavg", rounds=1500, availability={"p": 1.0}, eval_every=1500,
                      hyper={"local_steps": 1, "weighting": "samples"})
    gram = sum(A.T @ A for A in DATA.features)
    weighted = np.linalg.solve(gram, sum(A.T @ b for A, b in zip(DATA.features, DATA.targets)))
    assert np.linalg.norm(result.x - weighted) < 1e-8 < np.linalg.norm(weighted - X_STAR)
