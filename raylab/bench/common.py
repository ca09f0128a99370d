"""What every benchmark shares: a run directory, the machine's facts, Ray, and one way to print results.

    parser = argparse.ArgumentParser(prog="raylab bench NAME")
    add_bench_args(parser)                                # --address, --output-dir
    args = parser.parse_args(argv)
    with bench_run("NAME", args, settings={...}) as ctx:  # runs/bench-NAME-<time>/settings.json, Ray connected
        ...measure the baseline and raylab side by side...
        finish(ctx, results={...}, table=markdown_table)  # results.json, results.md, the table printed

`settings.json` holds the resolved settings of both sides plus the machine (CPUs, load average before and
after, library versions), so a figure can be traced to exactly what produced it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

from raylab.results import RunContext, atomic_write, format_value, new_run_dir


def add_bench_args(parser: argparse.ArgumentParser, ray: bool = True) -> None:
    parser.add_argument("--output-dir", default="runs", help="where the bench's run directory goes (default runs)")
    if ray:
        parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")


def machine() -> dict:
    import torch

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}
    with contextlib.suppress(ImportError):
        import ray

        info["ray"] = ray.__version__
    return info


@contextlib.contextmanager
def bench_run(name: str, args: argparse.Namespace, settings: dict, ray_cpus: int | None = None,
              use_ray: bool = True):
    """A run directory `bench-<name>-<time>` with settings.json written first; Ray connected when asked."""
    from raylab.driver import connect

    ctx = RunContext(new_run_dir(getattr(args, "output_dir", "runs"), f"bench-{name}"), progress=False)
    record = {"bench": name, "settings": settings, "machine": machine(), "started": time.strftime("%F %T")}
    atomic_write(ctx.path("settings.json"), json.dumps(record, indent=2, default=str).encode())
    with connect(getattr(args, "address", None), num_cpus=ray_cpus) if use_ray else contextlib.nullcontext():
        yield ctx
    print(f"bench results: {ctx.run_dir}  (settings.json, results.json, results.md)")


def finish(ctx: RunContext, results: dict, table: str) -> None:
    """Writes results.json (with the load average at the end) and results.md, and prints the table."""
    results = {**results, "load_avg_1m_end": os.getloadavg()[0]}
    atomic_write(ctx.path("results.json"), json.dumps(results, indent=2, default=str).encode())
    atomic_write(ctx.path("results.md"), (table.rstrip() + "\n").encode())
    print(table.rstrip())


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats get 4 significant digits (`raylab.results.format_value`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
