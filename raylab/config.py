"""Experiment configs: YAML files validated into typed pydantic models, with dotted `key=value` overrides.

Every YAML under `experiments/` names its experiment (`experiment: federated`); the experiment's module defines
a `Config` model that subclasses `RunConfig` below. Loading is all-or-nothing: a bad file, key, type or value
raises `ConfigError` with one line that names it and says what was expected, before anything is written.

    cfg = load_config("experiments/alm_ncqp.yaml", ["samples=20000", "problem.dim=30"])
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from raylab.registry import EXPERIMENTS


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string; researchers write learning rates that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+][0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config problem, reported to the user as one line (the CLI exits with code 2)."""


class Section(BaseModel):
    """Base of every config block: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(Section):
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance (None: all)")
    num_gpus: int | None = Field(None, ge=0)
    dashboard: bool = Field(False, description="start the dashboard, bound to 127.0.0.1 only")


class SearchSpace(Section):
    """One key's search space: exactly one of grid, choice, uniform, loguniform, randint."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    def kind(self) -> str:
        given = [k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform, randint (got {given or 'none'})")
        return given[0]


class SweepConfig(Section):
    space: dict[str, SearchSpace]
    metric: str
    mode: Literal["min", "max"] = "min"
    num_samples: int = Field(1, ge=1)
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(1, ge=1, description="ASHA: reports before a trial may be stopped")
    max_concurrent: int | None = Field(None, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial (Ray Tune FailureConfig)")

    @field_validator("space")
    @classmethod
    def _space_is_valid(cls, space: dict[str, SearchSpace]) -> dict[str, SearchSpace]:
        if not space:
            raise ValueError("needs at least one key to search over")
        for key, sp in space.items():
            try:
                kind = sp.kind()
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
            if kind in ("uniform", "loguniform", "randint"):
                low, high = getattr(sp, kind)
                if not low < high or (kind == "loguniform" and low <= 0):
                    raise ValueError(f"{key}: {kind} needs 0 < low < high for loguniform, low < high otherwise")
        return space


class RunConfig(Section):
    """Keys every experiment has. Experiment modules subclass this with their own typed fields."""

    experiment: str
    name: str | None = Field(None, description="run name; defaults to the YAML file's stem")
    seed: int = 0
    output_dir: str = "runs"
    checkpoint_every: int = Field(0, ge=0, description="log steps between checkpoints; 0: only at the end")
    progress: bool = True
    ray: RayConfig = RayConfig()
    sweep: SweepConfig | None = None


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(nbytes: float, what: str, fraction: float = 0.8) -> None:
    """Raises a one-line ValueError when `what` (a key, or a phrase naming keys) needs more than `fraction` of
    this machine's memory. Call it from a config's `model_validator(mode="after")` with an estimate."""
    total = machine_memory_bytes()
    if nbytes > fraction * total:
        raise ValueError(f"{what}: needs about {_bytes(nbytes)} of memory, more than {fraction:.0%} of this "
                         f"machine's {_bytes(total)}")


def looks_like_path(value: str) -> bool:
    """A local path rather than a hub id ("org/name"): absolute, relative with ./ ../ ~, or more than one /."""
    return value.startswith(("/", "./", "../", "~", ".")) or value.count("/") > 1 or value.endswith("/") or (
        os.sep != "/" and os.sep in value)


def check_model_path(value: str, key: str) -> str:
    """A model given as a local path must exist (no hub retries for a typo); a hub id passes unchanged."""
    if looks_like_path(value) and not Path(value).expanduser().exists():
        raise ValueError(f"{key}: no such local model directory {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML, so 3 is an int and [1, 2] a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key=value, with a dotted key such as problem.dim=20")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Sets each dotted key in a copy of `data`; intermediate blocks are created where missing."""
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is a value, not a block")
            node = child
        node[path[-1]] = value
    return data


def experiment_module(experiment: str):
    """The module of a registered experiment, or of a user's own one named by its module path."""
    known = f"expected one of {sorted(EXPERIMENTS)} or an importable module path"
    try:
        module = importlib.import_module(EXPERIMENTS.get(experiment, experiment))
    except ImportError as err:
        if experiment in EXPERIMENTS or err.name not in (experiment, experiment.split(".")[0]):
            raise  # a registered experiment, or a user's module, that fails to import: not a config problem
        raise ConfigError(f"experiment: unknown experiment {experiment!r}; {known}") from None
    if not hasattr(module, "Config") or not hasattr(module, "run"):
        raise ConfigError(f"experiment: module {experiment!r} defines no Config class and run function; {known}")
    return module


def config_class(experiment: str) -> type[RunConfig]:
    return experiment_module(experiment).Config


def validate(data: Any, source: str = "config") -> RunConfig:
    """Validates a config dict into the experiment's typed model, or raises a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level")
    experiment = data.get("experiment")
    if not isinstance(experiment, str):
        raise ConfigError(f"{source}: experiment: missing or not a string; expected one of {sorted(EXPERIMENTS)}")
    cls = config_class(experiment)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None


def format_validation_error(err: ValidationError) -> str:
    """The first pydantic error as `dotted.key: message (got value)`, plus a count of the others."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] != "missing" and not isinstance(first["input"], dict):
        msg += f" (got {first['input']!r})"
    more = err.error_count() - 1
    return (f"{key}: {msg}" if key else msg) + (f" [and {more} more problem{'s' * (more > 1)}]" if more else "")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    data = apply_overrides(load_yaml(path), list(overrides))
    data.setdefault("name", Path(path).stem)
    return validate(data, source=str(path))


def to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain YAML-able data (what a run directory stores)."""
    return cfg.model_dump(mode="json")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
