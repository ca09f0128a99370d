"""`simulate` and `ArrayData`, the public entry point: bad input is one line naming the agent or key, before any
round; a user's torch module trains through torch.func; Ray actors give the in-process result."""
import numpy as np
import pytest

from raylab.federated import ArrayData, simulate

RS = np.random.RandomState(0)
GOOD_A = [RS.randn(6, 3) for _ in range(4)]
GOOD_B = [a @ np.ones(3) for a in GOOD_A]


def replaced(arrays, k, value):
    return [value if i == k else a for i, a in enumerate(arrays)]


@pytest.mark.parametrize("features, targets, message", [
    (GOOD_A, GOOD_B[:3], "data: 4 feature arrays but 3 target arrays"),
    ([], [], "data: no agents"),
    (replaced(GOOD_A, 2, RS.randn(6, 4)), GOOD_B, "data: agent 2: features have 4 columns, agent 0's have 3"),
    (GOOD_A, replaced(GOOD_B, 1, np.ones(5)), "data: agent 1: 6 feature rows but 5 targets"),
    (replaced(GOOD_A, 3, np.zeros((0, 3))), replaced(GOOD_B, 3, np.zeros(0)), "data: agent 3: no samples"),
    (replaced(GOOD_A, 0, np.full((6, 3), np.nan)), GOOD_B, "data: agent 0: features contain NaN or inf"),
    (GOOD_A, replaced(GOOD_B, 2, np.array([1, 2, np.inf, 4, 5, 6.0])), "data: agent 2: targets contain NaN"),
    (replaced(GOOD_A, 1, RS.randn(6)), GOOD_B, "data: agent 1: features must be a 2-D array"),
])
def test_bad_arrays_are_one_line_errors_naming_the_agent(features, targets, message):
    with pytest.raises(ValueError) as err:
        ArrayData(features, targets)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"availability": {"p": 0.0}}, "p: must lie in (0, 1]"),
    ({"availability": {"p": 1.5}}, "p: must lie in (0, 1]"),
    ({"method": "fedsgd"}, "method: unknown ['fedsgd']"),
    ({"hyper": {"etaa": 1.0}}, "hyper: unknown keys ['etaa']"),
    ({"model": "logistic"}, "model: logistic needs class labels"),
])
def test_bad_arguments_are_one_line_errors_before_any_round(kwargs, message):
    with pytest.raises(ValueError) as err:
        simulate(ArrayData(GOOD_A, GOOD_B), rounds=5, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_factory_that_returns_no_module_is_named():
    from raylab.federated import ModelSpec

    with pytest.raises(ValueError, match="model.factory: returned a int, not a torch.nn.Module"):
        simulate(ArrayData(GOOD_A, GOOD_B), model=ModelSpec(name="module", factory="builtins:max"), rounds=1)


def test_a_user_module_factory_trains_on_class_labels():
    from raylab.federated import ModelSpec

    rs = np.random.RandomState(1)
    features = [rs.randn(30, 2) for _ in range(6)]
    labels = [(a[:, 0] + a[:, 1] > 0).astype(np.int64) for a in features]
    spec = ModelSpec(name="module", factory="raylab.federated.objectives:mlp")
    result = simulate(ArrayData(features, labels), model=spec, method=["ssl_alm", "scaffold"], rounds=300,
                      availability={"p": 0.5}, eval_every=100)
    last = result.history[-1]                  # at the start the cross-entropy is about log 2 = 0.69
    assert last["ssl_alm_objective"] < 0.15 and last["scaffold_objective"] < 0.15
    assert result.x.shape == (2 * 32 + 32 + 32 * 2 + 2,)


def test_the_theory_schedule_and_the_fresh_rho_draw_still_converge():
    data = ArrayData(GOOD_A, GOOD_B)
    exact = data.least_squares_solution()
    theory = simulate(data, rounds=2000, eval_every=2000, availability={"p": 0.5},
                      hyper={"schedule": "theory", "eta": 2.0, "tau": 8.0, "beta": 1.0})
    fresh = simulate(data, rounds=2000, eval_every=2000, availability={"p": 0.5},
                     hyper={"residual": "unbiased", "fresh_rho_draw": True})
    assert np.linalg.norm(theory.x - exact) < 1e-3 and np.linalg.norm(fresh.x - exact) < 1e-3


@pytest.mark.ray
@pytest.mark.slow
def test_ray_actors_give_the_in_process_result(ray_local):
    data = ArrayData(GOOD_A, GOOD_B)
    here = simulate(data, rounds=30, availability={"kind": "markov", "p": 0.3}, eval_every=10)
    actors = simulate(data, rounds=30, availability={"kind": "markov", "p": 0.3}, eval_every=10, num_actors=2)
    np.testing.assert_allclose(actors.x, here.x, rtol=0, atol=1e-12)
    assert [r["round"] for r in actors.history] == [10, 20, 30]


@pytest.mark.parametrize("partition, extra", [("dirichlet", {"alpha": 0.2}), ("shards", {"shards_per_agent": 1})])
def test_a_scikit_learn_table_is_partitioned_with_label_skew(partition, extra):
    from raylab.federated import DataSpec

    data = DataSpec(kind="dataset", source="sklearn:load_wine", num_agents=6, partition=partition, **extra).build(0)
    assert data.num_agents == 6 and data.classes == 3 and data.test is not None
    assert sum(len(b) for b in data.targets) + len(data.test[1]) == 178
    if partition == "shards":        # one label-sorted shard each: every agent but those at class edges sees one class
        assert sum(len(set(b.tolist())) == 1 for b in data.targets) >= 4


def test_a_table_file_with_a_natural_column_gives_one_agent_per_value(tmp_path):
    import pandas as pd

    from raylab.federated import DataSpec

    rs = np.random.RandomState(2)
    table = pd.DataFrame({"a": rs.randn(90), "b": rs.randn(90), "hospital": np.repeat(["x", "y", "z"], 30)})
    table["label"] = (table["a"] > 0).astype(int)
    table.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(kind="dataset", source=str(tmp_path / "t.csv"), partition="column", column="hospital")
    data = spec.build(0)
    assert data.num_agents == 3 and data.dim == 2
    result = simulate(spec, model="logistic", rounds=100, eval_every=100, availability={"p": 1.0})
    assert result.history[-1]["ssl_alm_accuracy"] > 0.8
    with pytest.raises(ValueError, match="data.label: no column 'y'"):
        DataSpec(kind="dataset", source=str(tmp_path / "t.csv"), label="y").build(0)
