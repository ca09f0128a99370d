"""The real command line, end to end, each in its own local Ray instance with 2 CPUs:
`raylab run` of the constrained experiment and a 4-trial `raylab tune` of its sweep."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
SMALL = ["samples=600", "log_points=2", "ray.num_cpus=2"]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def raylab(*args, cwd):
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "raylab.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_raylab_run_writes_results_and_plots(tmp_path):
    out = raylab("run", ROOT / "experiments/alm_ncqp.yaml", *SMALL, f"output_dir={tmp_path}", "progress=false",
                 cwd=tmp_path)
    (run_dir,) = tmp_path.iterdir()
    assert f"results: {run_dir}" in out
    assert {"config.yaml", "metrics.jsonl", "summary.json"} <= {p.name for p in run_dir.iterdir()}
    assert list(run_dir.glob("*.png")) and list((run_dir / "checkpoints").glob("*.pt"))


def test_raylab_tune_runs_four_trials(tmp_path):
    out = raylab("tune", ROOT / "experiments/alm_ncqp.yaml", *SMALL, "methods=[ssl_alm]", f"output_dir={tmp_path}",
                 cwd=tmp_path)
    (sweep_dir,) = tmp_path.iterdir()
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert len(rows) == 4 and all(not r["error"] for r in rows)
    metric = yaml.safe_load((ROOT / "experiments/alm_ncqp.yaml").read_text())["sweep"]["metric"]
    assert all(float(r[metric]) >= 0 for r in rows)
    best = yaml.safe_load((sweep_dir / "best_config.yaml").read_text())
    assert best["samples"] == 600 and "trials.md" in out
