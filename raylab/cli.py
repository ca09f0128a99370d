"""raylab's command line.

    raylab run CONFIG [k=v ...] [--address ADDR] [--resume RUN_DIR]   one experiment, on a local Ray or a cluster
    raylab tune CONFIG [k=v ...] [--address ADDR]                     the YAML's sweep: block through Ray Tune
    raylab bench NAME [args ...]                                      a benchmark (alm, federated, freedave, grpo)
    raylab report RUN_DIR ... [--out FILE]                            a Markdown table of runs, with their figures
    raylab check CONFIG [k=v ...]                                     validate a config and print it resolved

Config problems print one line (`raylab: error: <file>: <key>: <what was expected>`) and exit with code 2,
before anything is written. Other user-facing failures (a missing model path, a NaN loss, a dead actor) also
print one line and exit with code 2; set RAYLAB_DEBUG=1 for the full traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from raylab.config import ConfigError, load_config, to_dict
from raylab.results import Diverged
from raylab.registry import BENCHMARKS


def _fail(message: str, code: int = 2) -> int:
    print(f"raylab: error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raylab", description="Distributed training experiments on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    tune = sub.add_parser("tune", help="run the config's sweep: block with Ray Tune")
    tune.add_argument("config")
    tune.add_argument("overrides", nargs="*", metavar="key=value")
    tune.add_argument("--address")
    bench = sub.add_parser("bench", help="run a benchmark", add_help=False)
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.add_argument("args", nargs=argparse.REMAINDER)
    rep = sub.add_parser("report", help="summarise run directories as Markdown")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="write the report to this file instead of stdout")
    check = sub.add_parser("check", help="validate a config and print it resolved")
    check.add_argument("config")
    check.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("run", "tune", "check"):
            cfg = load_config(args.config, args.overrides)
        if args.command == "check":
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        if args.command == "run":
            from raylab.driver import run

            run_dir, summary = run(cfg, address=args.address, resume=args.resume)
            _print_summary(summary)
            print(f"results: {run_dir}  (config.yaml, metrics.jsonl, summary.json, plots: "
                  f"{', '.join(sorted(p.name for p in run_dir.glob('*.png'))) or 'none'})")
            return 0
        if args.command == "tune":
            from raylab.tune import sweep

            out, best, trials = sweep(cfg, address=args.address)
            print((out / "trials.md").read_text(), end="")
            print(f"sweep results: {out}  (trials.md, trials.csv, best_config.yaml)")
            return 0 if best else _fail(f"{cfg.name}: no trial reported {cfg.sweep.metric}", 1)
        if args.command == "bench":
            return int(importlib.import_module(BENCHMARKS[args.name]).main(args.args) or 0)
        if args.command == "report":
            from raylab.results import report

            text = report(args.run_dirs)
            if args.out:
                with open(args.out, "w") as f:
                    f.write(text)
                print(f"report: {args.out}")
            else:
                print(text, end="")
            return 0
    except ConfigError as err:
        return _fail(str(err))
    except Diverged as err:
        where = getattr(err, "run_dir", None)
        return _fail(f"{where}: {err}" if where else str(err), 3)
    except (FileNotFoundError, ValueError) as err:
        if os.environ.get("RAYLAB_DEBUG"):
            raise
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted; resume with --resume RUN_DIR", 130)
    return 0


def _print_summary(summary: dict) -> None:
    for key, value in summary.items():
        if isinstance(value, (int, float, str)):
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
