"""Every YAML under experiments/ validates, and so does every value of each sweep space."""
from pathlib import Path

import pytest

from raylab.config import check_sweep_space, load_config, to_dict

EXPERIMENTS = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


def test_there_are_experiments():
    assert len(EXPERIMENTS) >= 1


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_yaml_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and to_dict(cfg)["experiment"] == cfg.experiment
    if cfg.sweep is not None:
        check_sweep_space(cfg)
