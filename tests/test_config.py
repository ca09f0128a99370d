"""Config loading, overrides, and the one-line errors of malformed configs (exit code 2, nothing written)."""
from pathlib import Path

import pytest
import yaml

from raylab.cli import main
from raylab.config import ConfigError, apply_overrides, load_config, parse_override

TOY = {"experiment": "toy_experiment", "steps": 5, "lr": 0.5}


def write(tmp_path: Path, data, name="exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_overrides_are_typed_and_dotted():
    assert parse_override("problem.dim=20") == (["problem", "dim"], 20)
    assert parse_override("lr=1e-3") == (["lr"], 1e-3)
    assert parse_override("methods=[a, b]") == (["methods"], ["a", "b"])
    assert parse_override("name=") == (["name"], None)
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c.d=x"])
    assert data == {"a": {"b": 2, "c": {"d": "x"}}}


def test_load_config_resolves_defaults_name_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, TOY), ["lr=0.25", "ray.num_cpus=2"])
    assert (cfg.lr, cfg.steps, cfg.ray.num_cpus, cfg.name) == (0.25, 5, 2, "exp")
    assert cfg.sweep is None and cfg.seed == 0


def test_sweep_block_is_validated(tmp_path):
    data = {**TOY, "sweep": {"metric": "loss", "space": {"lr": {"loguniform": [1e-3, 1e-1]},
                                                          "steps": {"grid": [2, 4]}}}}
    cfg = load_config(write(tmp_path, data))
    assert cfg.sweep.space["lr"].kind() == "loguniform" and cfg.sweep.space["steps"].kind() == "grid"


MALFORMED = [
    # (file content or dict, overrides, words the one-line error must contain)
    ("experiment: [unclosed", [], ["not valid YAML", "line"]),
    ("- just\n- a list\n", [], ["mapping"]),
    ({"steps": 3}, [], ["experiment", "missing"]),
    ({"experiment": "nope"}, [], ["unknown experiment", "nope"]),
    ({**TOY, "stepz": 3}, [], ["stepz", "unknown key"]),
    ({**TOY, "steps": "many"}, [], ["steps", "integer", "many"]),
    ({**TOY, "steps": 0}, [], ["steps", "greater than or equal to 1"]),
    ({**TOY, "lr": -1}, [], ["lr", "greater than 0"]),
    ({**TOY, "ray": {"num_cpus": 0}}, [], ["ray.num_cpus"]),
    ({**TOY, "ray": {"cpus": 2}}, [], ["ray.cpus", "unknown key"]),
    (TOY, ["steps"], ["override", "key=value"]),
    (TOY, ["stepz=4"], ["stepz", "unknown key"]),
    (TOY, ["lr.x=1"], ["lr", "is a value"]),
    (TOY, ["seed.x=1"], ["seed", "integer"]),
    (TOY, ["lr=[1, 2"], ["not valid YAML"]),
    ({**TOY, "sweep": {"metric": "loss", "space": {"lr": {"grid": [1], "choice": [2]}}}}, [],
     ["sweep.space", "exactly one"]),
    ({**TOY, "sweep": {"metric": "loss", "space": {"lr": {"loguniform": [0, 1]}}}}, [], ["loguniform", "0 < low"]),
    ({**TOY, "sweep": {"metric": "loss", "mode": "best", "space": {"lr": {"grid": [1]}}}}, [], ["sweep.mode"]),
    ({**TOY, "sweep": {"space": {"lr": {"grid": [1]}}}}, [], ["sweep.metric", "required"]),
]


@pytest.mark.parametrize("content, overrides, words", MALFORMED)
def test_malformed_config_gives_one_line_exit_2_and_writes_nothing(tmp_path, capsys, content, overrides, words):
    out = tmp_path / "runs"
    path = write(tmp_path, content)
    code = main(["run", str(path), f"output_dir={out}", *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("raylab: error: "), err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "absent.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_unknown_sweep_key_is_caught_before_any_trial(tmp_path, capsys):
    data = {**TOY, "sweep": {"metric": "loss", "space": {"lr_typo": {"grid": [0.1]}}}}
    code = main(["tune", str(write(tmp_path, data)), f"output_dir={tmp_path / 'runs'}"])
    assert code == 2 and "lr_typo" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_check_prints_resolved_config(tmp_path, capsys):
    assert main(["check", str(write(tmp_path, TOY)), "steps=7"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["steps"] == 7 and resolved["ray"]["dashboard"] is False


def test_config_error_is_a_value_error():
    with pytest.raises(ConfigError):
        load_config("/nonexistent.yaml")
    assert issubclass(ConfigError, ValueError)
