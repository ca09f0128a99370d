"""raylab's command line.

    raylab run CONFIG [k=v ...] [--address ADDR] [--resume RUN_DIR [--override]]   one experiment
    raylab tune CONFIG [k=v ...] [--address ADDR]             the YAML's sweep: block through Ray Tune
    raylab bench [NAME [args ...]]                            a benchmark; without NAME, the list of them
    raylab report RUN_DIR ... [--out FILE]                    a Markdown table of runs, with their figures
    raylab check CONFIG [k=v ...]                             validate a config (and its sweep) and print it

`k=v` overrides may stand anywhere after the command, before or after the options.
Config problems print one line (`raylab: error: <file>: <key>: <what was expected>`) and exit with code 2,
before anything is written; so do an unreachable --address and other user-facing failures (a missing model
path, a corrupt run directory). A run that diverges prints `raylab: error: RUN_DIR: diverged at ...` and exits
3; a sweep with failed trials exits 1; Ctrl-C (or SIGTERM) exits 130 with the command that resumes the run.
Set RAYLAB_DEBUG=1 for the full traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from raylab.config import ConfigError, load_config, to_dict
from raylab.registry import BENCHMARKS
from raylab.results import Diverged

CONFIG_COMMANDS = ("run", "tune", "check")


def _fail(message: str, code: int = 2) -> int:
    print(f"raylab: error: {message}", file=sys.stderr)
    return code


def _config_args(p: argparse.ArgumentParser, address: bool = True) -> None:
    p.add_argument("items", nargs="+", metavar="CONFIG [key=value ...]",
                   help="the YAML file and dotted overrides, in any order")
    if address:
        p.add_argument("--address", help="Ray cluster address: host:port, ray://host:port or auto "
                                         "(default: $RAY_ADDRESS, else a local Ray instance)")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = argparse.ArgumentParser(prog="raylab", description="Distributed training experiments on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment")
    _config_args(run)
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    run.add_argument("--override", action="store_true",
                     help="with --resume: apply a changed config from the resumed step (recorded in config.yaml)")
    tune = sub.add_parser("tune", help="run the config's sweep: block with Ray Tune")
    _config_args(tune)
    bench = sub.add_parser("bench", help="run a benchmark (without NAME: list them)", add_help=False)
    bench.add_argument("name", nargs="?")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    rep = sub.add_parser("report", help="summarise run directories as Markdown")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="write the report to this file instead of stdout")
    check = sub.add_parser("check", help="validate a config and its sweep, and print it resolved")
    _config_args(check, address=False)
    return p, {"run": run, "tune": tune, "check": check}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options and `k=v` overrides in any order after run/tune/check (argparse's intermixed parsing)."""
    top, subs = _parser()
    if argv and argv[0] in CONFIG_COMMANDS:
        args = subs[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        paths = [item for item in args.items if "=" not in item] or [args.items[0]]
        args.config, args.overrides = paths[0], [item for item in args.items if item is not paths[0]]
        return args
    if argv and argv[0] == "bench":  # everything after NAME (its --help too) belongs to the bench
        return argparse.Namespace(command="bench", name=argv[1] if len(argv) > 1 else None, args=argv[2:])
    return top.parse_args(argv)


def bench_list() -> str:
    """Each benchmark with the first line of its module's docstring (read without importing it)."""
    import ast
    import importlib.util

    lines = ["usage: raylab bench NAME [args ...]   (raylab bench NAME --help: its options)", "", "benchmarks:"]
    for name, module in sorted(BENCHMARKS.items()):
        spec = importlib.util.find_spec(module)
        doc = ast.get_docstring(ast.parse(open(spec.origin).read())) if spec and spec.origin else None
        lines.append(f"  {name:<12}{(doc or '').strip().splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command in CONFIG_COMMANDS:
            if args.command == "run" and args.override and not args.resume:
                raise ConfigError("--override: only means something with --resume RUN_DIR")
            cfg = load_config(args.config, args.overrides)
        if args.command == "check":
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        if args.command == "run":
            from raylab.driver import run

            run_dir, summary = run(cfg, address=args.address, resume=args.resume, override=args.override)
            _print_summary(summary)
            print(f"results: {run_dir}  (config.yaml, metrics.jsonl, summary.json, plots: "
                  f"{', '.join(sorted(p.name for p in run_dir.glob('*.png'))) or 'none'})")
            return 0
        if args.command == "tune":
            from raylab.tune import FAILED, sweep

            if cfg.sweep is None:
                raise ConfigError(f"{args.config}: sweep: the config has no sweep: block to tune")
            out, best, trials = sweep(cfg, address=args.address)
            print((out / "trials.md").read_text(), end="")
            print(f"sweep results: {out}  (trials.md, trials.csv, best_config.yaml)")
            failed = sum(t["status"] in FAILED for t in trials)
            if failed:
                return _fail(f"{out}: {failed} of {len(trials)} trials failed (see trials.md)", 1)
            return 0 if best else _fail(f"{out}: no trial completed with a finite {cfg.sweep.metric}", 1)
        if args.command == "bench":
            if args.name in (None, "-h", "--help"):
                print(bench_list())
                return 0
            if args.name not in BENCHMARKS:
                raise ConfigError(f"bench: unknown benchmark {args.name!r}; expected one of {sorted(BENCHMARKS)}")
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
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        if os.environ.get("RAYLAB_DEBUG"):
            raise
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt as err:
        where = getattr(err, "run_dir", None)
        if args.command == "run" and where is not None:
            return _fail(f"interrupted; resume with: raylab run {args.config} --resume {where}", 130)
        return _fail("interrupted", 130)
    return 0


def _print_summary(summary: dict) -> None:
    for key, value in summary.items():
        if isinstance(value, (int, float, str)):
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
