"""One table of bad inputs across every experiment kind and the three config commands (run, tune, check): each
exits 2 with a single `raylab: error:` line naming the key, no traceback, and nothing written.

A case that needs an experiment's own validator (a cross-field rule, a memory estimate, a model path) is
checked with `check` only, so that a missing validator cannot start a real run; the last column names the part
whose config holds that validator. Generic checks (booleans or floats for integers, NaN/inf, plain names, every
sweep value) live in raylab/config.py and apply to every experiment."""
from pathlib import Path

import pytest
import yaml

from raylab.cli import main
from raylab.config import load_yaml

ROOT = Path(__file__).parents[1]
EXP = ROOT / "experiments"
FED = "federated_digits.yaml"


KINDS = {  # experiment kind -> a YAML of it
    "constrained": "alm_ncqp.yaml", "alm_rates": "alm_rates.yaml", "federated": FED,
    "freedave_eval": "freedave_eval.yaml", "grpo": "grpo_tiny.yaml", "grpo_bandit": "grpo_bandit.yaml",
    "mdlm_train": "mdlm_train.yaml",
}
COMMANDS = ("run", "check", "tune")

# generic: every kind, commands in rotation (tune of a YAML without sweep: fails on the value first)
GENERIC = [
    (["seed=true"], "seed: expected a number, not a boolean"),
    (["name=../../x"], "name: must be a plain name"),
    (["name=a/b"], "name: must be a plain name"),
    (["checkpoint_every=1e15"], "checkpoint_every: expected an integer, not a float"),
    (["ray.num_cpus=2.5"], "ray.num_cpus: expected an integer, not a float"),
    (["ray.num_cpus=true"], "ray.num_cpus: expected a number, not a boolean"),
    (["no_such_key=1"], "no_such_key: unknown key"),
]
CASES = []
for i, (kind, yml) in enumerate(KINDS.items()):
    for j, (overrides, words) in enumerate(GENERIC):
        CASES.append((f"{kind}-{overrides[0]}", COMMANDS[(i + j) % 3], yml, overrides, None, [words], None))

# (id, command, yaml, overrides, sweep space replacing the YAML's, words, owner of the validator or None)
CASES += [
    # constrained / alm_rates
    ("samples-bool", "run", "alm_ncqp.yaml", ["samples=true"], None, ["samples: expected a number"], None),
    ("samples-1e15", "run", "alm_ncqp.yaml", ["samples=1e15"], None, ["samples: expected an integer"], None),
    ("noise-nan", "run", "alm_ncqp.yaml", ["problem.noise=.nan"], None, ["problem.noise: must be a finite"], None),
    ("method-unknown", "check", "alm_ncqp.yaml", ["methods=[nope]"], None, ["methods.0"], None),
    ("constraints>dim", "check", "alm_ncqp.yaml", ["problem.constraints=40", "problem.dim=20"], None,
     ["problem.constraints"], "constrained"),
    ("ncqp-sweep-grid-2nd", "tune", "alm_ncqp.yaml", [], {"alm.eta": {"grid": [0.1, -0.4]}},
     ["sweep.space.alm.eta.grid[1]", "alm.eta"], None),
    ("ncqp-sweep-choice-nan", "tune", "alm_ncqp.yaml", [], {"alm.M_y": {"choice": [10.0, float("nan")]}},
     ["sweep.space.alm.M_y.choice[1]", "must be a finite number"], None),
    ("ncqp-sweep-unknown-key", "tune", "alm_ncqp.yaml", [], {"alm.etaa": {"grid": [0.1]}},
     ["alm.etaa: unknown key"], None),
    ("ncqp-sweep-two-kinds", "tune", "alm_ncqp.yaml", [], {"alm.eta": {"grid": [0.1], "choice": [0.2]}},
     ["exactly one"], None),
    ("budgets-bool", "run", "alm_rates.yaml", ["budgets=[500, true]"], None,
     ["budgets[1]: expected a number, not a boolean"], None),
    ("budgets-float", "check", "alm_rates.yaml", ["budgets=[500, 1e15]"], None,
     ["budgets[1]: expected an integer"], None),
    ("eps-inf", "run", "alm_rates.yaml", ["eps_targets=[0.1, .inf]"], None, ["eps_targets[1]: must be a finite"],
     None),
    # federated
    ("rounds-bool", "run", FED, ["rounds=true"], None, ["rounds: expected a number, not a boolean"], None),
    ("rounds-1e15", "check", FED, ["rounds=1e15"], None, ["rounds: expected an integer"], None),
    ("eta-inf", "run", FED, ["alm.eta=.inf"], None, ["alm.eta: must be a finite number"], None),
    ("local-lr-nan", "run", FED, ["baselines.local_lr=.nan"], None, ["baselines.local_lr: must be"],
     None),
    ("agents-1e12-float", "run", FED, ["data.num_agents=1e12"], None,
     ["data.num_agents: expected an integer"], None),
    ("agents-memory", "check", FED, ["data.num_agents=1000000000000"], None, ["data.num_agents"],
     "federated"),
    ("p>1", "check", FED, ["availability.p=1.5"], None, ["availability.p"], "federated"),
    ("fed-sweep-grid-2nd", "tune", "federated_sweep.yaml", [], {"availability.p": {"grid": [0.1, 3.0]}},
     ["sweep.space.availability.p.grid[1]"], "federated"),
    ("fed-sweep-loguniform-high", "tune", "federated_sweep.yaml", [],
     {"alm.eta": {"loguniform": [0.005, float("inf")]}},
     ["sweep.space.alm.eta.loguniform", "finite"], None),
    ("fed-sweep-randint-float", "tune", "federated_sweep.yaml", [], {"rounds": {"randint": [10, 20.5]}},
     ["sweep.space.rounds.randint", "expected an integer"], None),
    # grpo
    ("grpo-steps-bool", "run", "grpo_tiny.yaml", ["steps=true"], None, ["steps: expected a number"], None),
    ("grpo-lr-nan", "run", "grpo_tiny.yaml", ["learner.lr=.nan"], None, ["learner.lr: must be a finite"], None),
    ("grpo-model-path", "check", "grpo_tiny.yaml", ["policy.model=./no/such/model"], None, ["policy.model"],
     "grpo"),
    ("grpo-sweep-grid-2nd", "tune", "grpo_tiny.yaml", [], {"steps": {"grid": [2, 0]}},
     ["sweep.space.steps.grid[1]", "steps"], None),
    # grpo_bandit
    ("bandit-iter-1e15", "run", "grpo_bandit.yaml", ["iterations=1e15"], None, ["iterations: expected an integer"],
     None),
    ("bandit-lr-inf", "check", "grpo_bandit.yaml", ["lr=.inf"], None, ["lr: must be a finite"], None),
    ("bandit-questions-bool", "run", "grpo_bandit.yaml", ["bandit.num_questions=true"], None,
     ["bandit.num_questions: expected a number"], None),
    ("bandit-difficulty-nan", "run", "grpo_bandit.yaml", ["difficulties.easy=.nan"], None,
     ["difficulties.easy: must be a finite"], None),
    ("bandit-sweep-grid-2nd", "tune", "grpo_bandit.yaml", [], {"lr": {"grid": [0.5, -1.0]}},
     ["sweep.space.lr.grid[1]", "lr"], None),
    ("bandit-sweep-modes", "tune", "grpo_bandit.yaml", [], {"modes": {"grid": [["std"], ["bogus"]]}},
     ["sweep.space.modes.grid[1]", "modes"], None),
    # freedave
    ("freedave-threshold-nan", "run", "freedave_eval.yaml", ["threshold=.nan"], None, ["threshold: must be"],
     None),
    ("freedave-samples-float", "check", "freedave_eval.yaml", ["samples=2.5"], None, ["samples: expected an int"],
     None),
    ("freedave-checkpoint-path", "check", "freedave_eval.yaml", ["checkpoint=./no/such/dir"], None,
     ["checkpoint"], "diffusion"),
    ("freedave-sweep-grid-3rd", "tune", "freedave_eval.yaml", [], {"draft_steps": {"grid": [2, 4, 0]}},
     ["sweep.space.draft_steps.grid[2]", "draft_steps"], None),
    ("freedave-sweep-float-in-int-grid", "tune", "freedave_eval.yaml", [], {"block_length": {"grid": [4, 12.5]}},
     ["sweep.space.block_length.grid[1]", "expected an integer"], None),
    # mdlm
    ("mdlm-lr-inf", "run", "mdlm_train.yaml", ["lr=.inf"], None, ["lr: must be a finite"], None),
    ("mdlm-steps-1e15", "run", "mdlm_train.yaml", ["steps=1e15"], None, ["steps: expected an integer"], None),
    ("mdlm-task", "check", "mdlm_train.yaml", ["task=nope"], None, ["task"], None),
    # command line
    ("override-no-equals", "run", "alm_ncqp.yaml", ["samples"], None, ["expected key=value"], None),
    ("override-bad-yaml", "check", "alm_ncqp.yaml", ["samples=[1, 2"], None, ["not valid YAML"], None),
    ("override-into-value", "run", "alm_ncqp.yaml", ["samples.x=1"], None, ["samples", "is a value"], None),
    ("tune-no-sweep", "tune", "alm_rates.yaml", [], None, ["no sweep: block"], None),
]
ROWS = [pytest.param(command, yml, overrides, space, words, id=ident)
        for ident, command, yml, overrides, space, words, owner in CASES]


def test_the_table_is_large_and_covers_every_kind_and_command():
    assert len(ROWS) >= 60
    assert {p.values[0] for p in ROWS} == set(COMMANDS)
    assert {p.values[1] for p in ROWS} >= set(KINDS.values())


@pytest.mark.parametrize("command, yml, overrides, space, words", ROWS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, command, yml, overrides,
                                                         space, words):
    monkeypatch.chdir(tmp_path)
    path = EXP / yml
    if space is not None:
        data = load_yaml(path)
        data["sweep"]["space"] = space
        path = tmp_path / yml
        path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    code = main([command, str(path), f"output_dir={out}", *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("raylab: error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [yml] if space is not None else [])
