"""Failing loudly and safely: divergence, sweeps whose trials fail in every way, honest resume (config changes,
corrupt files, bad checkpoints), TensorBoard events equal to metrics.jsonl, the CLI's argument order and bench list,
and Ray connections that fail in one line. All on the toy experiment (tests/toy_experiment.py)."""
import csv
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml

from raylab import driver
from raylab.cli import main, parse_args
from raylab.config import load_config
from raylab.registry import BENCHMARKS
from raylab.results import read_metrics


def toy_config(tmp_path, name="toy", **extra):
    data = {"experiment": "toy_experiment", "steps": 12, "lr": 0.3, "checkpoint_every": 4,
            "output_dir": str(tmp_path / "runs"), "progress": False, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("raylab: warning:")]
    assert len(lines) == 1 and lines[0].startswith("raylab: error: ") and "Traceback" not in err, err
    return lines[0]


def tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag, read from the TFRecord event files (length, crc, Event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


# --- divergence --------------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_a_diverging_run_writes_its_summary_and_plot_and_exits_3(tmp_path, ray_local, capsys):
    code = main(["run", str(toy_config(tmp_path, steps=80, lr=3.0, noise=0.0))])
    line = one_line(capsys)
    assert code == 3
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_metric"] == "loss"
    assert line == f"raylab: error: {run_dir}: diverged at step {summary['diverged_at']} (loss is inf)"
    rows = read_metrics(run_dir)
    assert rows[-1]["loss"] is None and all(r["loss"] is not None for r in rows[:-1])
    assert (run_dir / "loss.png").stat().st_size > 1000


# --- sweeps ------------------------------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.slow
def test_sweep_statuses_invalid_and_diverged_not_retried_failures_retried_and_counted(tmp_path, ray_local, capsys):
    # at step 5 a trial fails once (then resumes), fails on every attempt, raises a ConfigError, or logs a NaN loss
    sweep = {"metric": "loss", "mode": "min", "max_failures": 1, "cpus_per_trial": 1,
             "space": {"fail": {"grid": ["once", "always", "config", "nan"]}}}
    code = main(["tune", str(toy_config(tmp_path, steps=8, fail_at=5, sweep=sweep))])
    line = one_line(capsys)
    assert code == 1 and line.endswith("2 of 4 trials failed (see trials.md)")
    (out,) = (tmp_path / "runs").iterdir()
    rows = {r["fail"]: r for r in csv.DictReader((out / "trials.csv").open())}
    assert {k: r["status"] for k, r in rows.items()} == {
        "once": "completed", "always": "failed", "config": "invalid", "nan": "diverged"}
    assert rows["always"]["error"] == "RuntimeError: planned failure at step 5"
    assert rows["config"]["error"] == "fail_at: planned config error at step 5"
    assert rows["nan"]["error"] == "diverged at step 5 (loss is nan)"
    assert float(rows["once"]["loss"]) >= 0 and rows["once"]["error"] == ""
    table = (out / "trials.md").read_text()
    assert "\x1b" not in table and "Traceback" not in table and len(table.splitlines()) == 2 + 4
    attempts = {yaml.safe_load((d / "config.yaml").read_text())["fail"]: len((d / "attempts").read_text().split())
                for d in out.glob("tune/*/run")}
    assert attempts == {"once": 2, "always": 2, "config": 1, "nan": 1}
    assert yaml.safe_load((out / "best_config.yaml").read_text())["fail"] == "once"


def test_every_sweep_value_is_validated_before_anything_is_written(tmp_path, capsys):
    bad_second = {"metric": "loss", "space": {"lr": {"grid": [0.1, -0.5]}}}
    assert main(["tune", str(toy_config(tmp_path, sweep=bad_second))]) == 2
    assert "sweep.space.lr.grid[1]: lr: Input should be greater than 0" in one_line(capsys)
    high = {"metric": "loss", "space": {"lr": {"uniform": [0.1, 20.0]}}}
    assert main(["check", str(toy_config(tmp_path, sweep=high))]) == 2
    assert "sweep.space.lr.uniform high" in one_line(capsys)
    assert not (tmp_path / "runs").exists()


# --- resume ------------------------------------------------------------------------------------------------------
@pytest.fixture
def crashed(tmp_path, ray_local):
    """A full run and a run that crashed at step 9 (checkpoints after 4 and 8 steps), same config."""
    full_dir, _ = driver.run(load_config(toy_config(tmp_path, name="full")))
    path = toy_config(tmp_path, fail_at=9)
    with pytest.raises(RuntimeError, match="planned failure"):
        driver.run(load_config(path))
    (crashed_dir,) = [d for d in (tmp_path / "runs").iterdir() if d != full_dir]
    return path, crashed_dir, full_dir


@pytest.mark.ray
def test_resume_with_a_changed_config_is_refused_then_recorded_with_override(crashed, capsys):
    path, run_dir, _ = crashed
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert main(["run", str(path), "--resume", str(run_dir), "lr=0.1"]) == 2
    line = one_line(capsys)
    assert "lr (0.3 -> 0.1)" in line and "add --override" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert main(["run", str(path), "lr=0.1", "--resume", str(run_dir), "--override"]) == 0
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["lr"] == 0.3 and stored["resume_overrides"] == [{"from_step": 8, "values": {"lr": 0.1}}]
    # resuming again with the overridden value is no change; going back to 0.3 would be one
    assert main(["run", str(path), "lr=0.1", "--resume", str(run_dir)]) == 0
    assert main(["run", str(path), "--resume", str(run_dir)]) == 2
    assert "lr (0.1 -> 0.3)" in one_line(capsys)
    assert main(["check", str(run_dir / "config.yaml")]) == 2  # not silently rerun as if one config held throughout
    assert "resume_overrides: this is a resumed run's config.yaml" in one_line(capsys)


@pytest.mark.ray
def test_resume_falls_back_from_a_truncated_or_foreign_checkpoint_and_a_latest_outside(crashed, capsys):
    path, run_dir, full_dir = crashed
    ckpts = run_dir / "checkpoints"
    newest = ckpts / "ckpt-000000008.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    (ckpts / "latest").write_text("../../config.yaml")  # points outside checkpoints/
    assert main(["run", str(path), "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "does not name a checkpoint" in err and "ckpt-000000008.pt: unreadable checkpoint" in err
    assert read_metrics(run_dir) == read_metrics(full_dir)


@pytest.mark.ray
def test_a_checkpoint_holding_code_objects_is_not_unpickled(crashed, capsys):
    path, run_dir, full_dir = crashed
    torch.save({"completed": 8, "rows": 8, "state": {"x": Path("/etc")}}, run_dir / "checkpoints" / "ckpt-000000008.pt")
    assert main(["run", str(path), "--resume", str(run_dir)]) == 0
    assert "ckpt-000000008.pt: unreadable checkpoint (UnpicklingError)" in capsys.readouterr().err
    assert read_metrics(run_dir) == read_metrics(full_dir)


@pytest.mark.ray
@pytest.mark.parametrize("name, garbage", [("config.yaml", "experiment: [toy\n"), ("config.yaml", "- a\n"),
                                           ("metrics.jsonl", '{"step": 0}\n{"step": 1, "lo\n')])
def test_a_corrupt_run_file_is_one_line_naming_it(crashed, capsys, name, garbage):
    path, run_dir, _ = crashed
    (run_dir / name).write_text(garbage)
    assert main(["run", str(path), "--resume", str(run_dir)]) == 2
    line = one_line(capsys)
    assert str(run_dir / name) in line and "corrupt" in line


# --- TensorBoard -------------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_tensorboard_events_hold_the_metrics_rows_also_after_a_resume(crashed):
    path, run_dir, full_dir = crashed
    assert main(["run", str(path), "--resume", str(run_dir)]) == 0
    for d in (full_dir, run_dir):
        rows = read_metrics(d)
        scalars = tensorboard_scalars(d)
        assert set(scalars) == {"loss", "x"}
        for tag, points in scalars.items():
            assert sorted(points) == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in rows]


# --- CLI -----------------------------------------------------------------------------------------------------------
def test_overrides_may_stand_before_or_after_options():
    args = parse_args(["run", "lr=1", "exp.yaml", "--address", "h:1", "steps=3", "--resume", "d", "seed=2",
                       "--override"])
    assert (args.config, args.overrides, args.address, args.resume, args.override) == (
        "exp.yaml", ["lr=1", "steps=3", "seed=2"], "h:1", "d", True)
    assert parse_args(["tune", "e.yaml", "--address", "auto", "a.b=1"]).overrides == ["a.b=1"]


def test_bench_help_lists_every_benchmark(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in BENCHMARKS)


def test_override_without_resume_is_one_line(tmp_path, capsys):
    assert main(["run", str(toy_config(tmp_path)), "--override"]) == 2
    assert "--override" in one_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_address_fails_fast_in_one_line_and_writes_nothing(tmp_path, capsys):
    import time

    start = time.monotonic()
    assert main(["run", str(toy_config(tmp_path)), "--address", "127.0.0.1:9"]) == 2
    assert "--address 127.0.0.1:9: no Ray cluster reachable there" in one_line(capsys)
    assert time.monotonic() - start < 30 and not (tmp_path / "runs").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_stops_the_run_with_the_resume_command_and_shuts_down_every_ray_process(tmp_path):
    """Also: the local dashboard's web server (ray.dashboard=true) listens on 127.0.0.1 only. (Its Prometheus
    metrics server, when it gets its fixed port, listens on every interface: README, Security.)"""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import psutil

    temp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # this run's Ray session lives here: its processes name it
    path = toy_config(tmp_path, steps=100000, sleep_s=0.05, **{"ray": {"num_cpus": 1, "dashboard": True}})
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": temp}
    proc = subprocess.Popen([sys.executable, "-m", "raylab.cli", "run", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs").glob("*/metrics.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.5)

    def ray_processes():
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(temp in part for part in p.info["cmdline"] or []):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    assert ray_processes(), "the run should have started Ray under its temp dir"
    dashboards = [p for p in ray_processes() if any(part.endswith("dashboard.py") for part in p.info["cmdline"])]
    deadline = time.monotonic() + 60
    web = set()  # the dashboard's web server: the ports it serves on loopback
    while dashboards and not web and time.monotonic() < deadline:
        listening = {(c.laddr.ip, c.laddr.port) for d in dashboards for c in d.net_connections("tcp")
                     if c.status == "LISTEN"}
        web = {port for ip, port in listening if ip == "127.0.0.1"}
        time.sleep(0.5)
    assert web, "the local dashboard should listen on 127.0.0.1"
    exposed = {(ip, port) for ip, port in listening if port in web and ip != "127.0.0.1"}
    assert not exposed, f"the dashboard's web server must listen on loopback only, not on {exposed}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert proc.returncode == 130
    hint = f"raylab: error: interrupted; resume with: raylab run {path} --resume {run_dir}"
    assert err.strip().splitlines()[-1] == hint
    deadline = time.monotonic() + 15
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [" ".join(p.info["cmdline"][:2]) for p in ray_processes()]
    assert not left, f"still running after the driver ended: {left}"


def test_an_address_that_is_not_a_ray_cluster_fails_in_one_line_within_30_s(tmp_path, capsys):
    import socket
    import time

    with socket.socket() as server:  # accepts TCP connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        assert main(["run", str(toy_config(tmp_path)), "--address", address]) == 2
        assert f"--address {address}: something listens there but no Ray GCS answered" in one_line(capsys)
        assert time.monotonic() - start < 30 and not (tmp_path / "runs").exists()


@pytest.mark.ray
def test_report_names_a_corrupt_summary(crashed, capsys):
    _, _, full_dir = crashed
    (full_dir / "summary.json").write_text("{not json")
    assert main(["report", str(full_dir)]) == 2
    assert f"{full_dir / 'summary.json'}: not valid JSON" in one_line(capsys)
