"""Experiment configs: YAML files validated into typed pydantic models, with dotted `key=value` overrides.

Every YAML under `experiments/` names its experiment (`experiment: federated`); the experiment's module defines
a `Config` model that subclasses `RunConfig` below. Loading is all-or-nothing: a bad file, key, type or value
raises `ConfigError` with one line that names it and says what was expected, before anything is written.

    cfg = load_config("experiments/alm_ncqp.yaml", ["samples=20000", "problem.dim=30"])
"""
from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import itertools
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

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


def _allows_nonfinite(info: Any) -> bool:
    """Whether a field opted in to NaN/inf (`Field(allow_inf_nan=True)`, also inside `Annotated`)."""
    if getattr(info, "allow_inf_nan", False):
        return True
    return isinstance(info, FieldInfo) and any(getattr(m, "allow_inf_nan", False) for m in info.metadata)


def _fields(tp: Any) -> dict[str, tuple[Any, bool]]:
    """name -> (annotation, allows NaN/inf) for a pydantic model or a dataclass; {} for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {name: (f.annotation, _allows_nonfinite(f)) for name, f in tp.model_fields.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {f.name: (hints.get(f.name, Any), _allows_nonfinite(f.default) or bool(f.metadata.get("allow_inf_nan")))
                for f in dataclasses.fields(tp)}
    return {}


def _alternatives(tp: Any) -> tuple[list[Any], bool]:
    """The types an annotation admits (unions and Annotated unwrapped), and whether it opts in to NaN/inf."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(tp)
        alts, allow = _alternatives(inner)
        return alts, allow or any(_allows_nonfinite(m) for m in meta)
    if origin in (typing.Union, types.UnionType):
        alts, allow = [], False
        for arg in typing.get_args(tp):
            more, extra = _alternatives(arg)
            alts, allow = alts + more, allow or extra
        return alts, allow
    return [tp], False


def check_value(value: Any, tp: Any, key: str, allow_nonfinite: bool = False) -> None:
    """The checks pydantic's lax mode leaves out, applied to raw config data against its annotation `tp`:
    no booleans for numbers (`rounds=true`), no floats for integers (`rounds=1e15`), no NaN or inf for floats
    unless the field opts in with `Field(allow_inf_nan=True)`; blocks, lists and mappings are checked inside."""
    alts, extra = _alternatives(tp)
    allow_nonfinite = allow_nonfinite or extra
    bases = [typing.get_origin(a) or a for a in alts]
    if any(b in (Any, object) for b in bases):
        return
    if isinstance(value, bool):
        if bool not in bases and any(b in (int, float) for b in bases):
            raise ValueError(f"{key}: expected a number, not a boolean (got {str(value).lower()})")
    elif isinstance(value, float):
        if int in bases and float not in bases and str not in bases:
            raise ValueError(f"{key}: expected an integer, not a float (got {value:.10g})")
        if float in bases and not math.isfinite(value) and not allow_nonfinite:
            raise ValueError(f"{key}: must be a finite number (got {value})")
    elif isinstance(value, dict):
        for alt in alts:
            fields = _fields(alt)
            if fields:
                for name, item in value.items():
                    if name in fields:
                        check_value(item, fields[name][0], f"{key}.{name}" if key else str(name), fields[name][1])
                return
            if typing.get_origin(alt) in (dict, collections.abc.Mapping) and len(typing.get_args(alt)) == 2:
                for name, item in value.items():
                    check_value(item, typing.get_args(alt)[1], f"{key}.{name}", allow_nonfinite)
                return
    elif isinstance(value, (list, tuple)):
        for alt in alts:
            origin, args = typing.get_origin(alt), typing.get_args(alt)
            if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and args:
                for i, item in enumerate(value):
                    arg = args[0] if origin is not tuple or args[-1] is Ellipsis else args[min(i, len(args) - 1)]
                    check_value(item, arg, f"{key}[{i}]", allow_nonfinite)
                return


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


class RunConfig(Section):
    """Keys every experiment has. Experiment modules subclass this with their own typed fields.

    Before pydantic's own checks, every value of the raw data is checked against its field's type
    (`check_value`: no booleans or floats for integers, finite floats); `name` must be a plain file name."""

    experiment: str
    name: str | None = Field(None, description="run name (a plain file name); defaults to the YAML file's stem")
    seed: int = 0
    output_dir: str = "runs"
    checkpoint_every: int = Field(0, ge=0, description="the experiment's own steps (its STEP_NAME: rounds, "
                                  "iterations, training steps) between checkpoints; 0: only at the end")
    progress: bool = True
    ray: RayConfig = RayConfig()
    sweep: SweepConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _strict_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_value(data, cls, "")
        return data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is not None and (not _PLAIN_NAME.fullmatch(name) or ".." in name):
            raise ValueError("must be a plain name (letters, digits and . _ + = -; no / and no ..)")
        return name


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
    if "resume_overrides" in data:
        raise ConfigError(f"{source}: resume_overrides: this is a resumed run's config.yaml, which used its values "
                          "only until each override's from_step; remove resume_overrides to rerun the original")
    cls = config_class(experiment)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None
    if cfg.sweep is not None:
        check_sweep_space(cfg, source)
    return cfg


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Sets `a.b.c` in nested dicts, creating blocks that are missing."""
    *parents, leaf = key.split(".")
    for i, part in enumerate(parents):
        child = data.setdefault(part, {})
        if child is None:
            child = data[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parents[: i + 1])} is a value, not a block (setting {key})")
        data = child
    data[leaf] = value


def with_values(base: dict, values: dict[str, Any], source: str = "trial") -> RunConfig:
    """The config of one sweep trial: `base` (resolved config data) without its sweep, with each dotted key of
    `values` set, validated like any config."""
    data = _deep_copy(base)
    data.pop("sweep", None)
    for key, value in values.items():
        set_dotted(data, key, value)
    data["progress"] = False
    return validate(data, source=source)


def space_points(space: SearchSpace) -> list[Any]:
    """The values of a search space a trial can get that validation must see: every grid and choice value,
    both bounds of a distribution (randint's upper bound is exclusive: its largest value)."""
    kind = space.kind()
    values = getattr(space, kind)
    if kind == "randint":
        return [values[0], values[1] - 1]
    return list(values)


def check_sweep_space(cfg: RunConfig, source: str = "config", max_grid_product: int = 64) -> None:
    """Every value a trial can get, each set alone on the base config, must make a valid config; a grid-only
    space of at most `max_grid_product` trials is also checked combination by combination."""
    base = to_dict(cfg)
    grids = {}
    for key, space in cfg.sweep.space.items():
        kind = space.kind()
        for i, value in enumerate(space_points(space)):
            where = f"sweep.space.{key}.{kind}" + (f"[{i}]" if kind in ("grid", "choice") else
                                                   (" low" if i == 0 else " high"))
            try:
                with_values(base, {key: value}, source=where)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
        if kind == "grid":
            grids[key] = space.grid
    if len(grids) == len(cfg.sweep.space) > 1 and math.prod(map(len, grids.values())) <= max_grid_product:
        for combo in itertools.product(*grids.values()):
            values = dict(zip(grids, combo))
            try:
                with_values(base, values, source="sweep.space grid point " + ", ".join(
                    f"{k}={v!r}" for k, v in values.items()))
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None


def format_validation_error(err: ValidationError) -> str:
    """The first pydantic error as `dotted.key: message (got value)`, plus a count of the others."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] != "missing" and not isinstance(first["input"], dict):
        msg += f" (got {first['input']!r})"
    inner = re.match(r"([A-Za-z_][\w.\[\]]*): ", msg)
    if key and inner:  # a block's own validator named one of its fields: `data: num_agents: ...` -> `data.num_agents`
        key, msg = f"{key}.{inner.group(1)}", msg[inner.end():]
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
