"""`simulate`: federated training on your own per-agent arrays in one call, in this process or on Ray actors.

    from raylab.federated import ArrayData, simulate
    data = ArrayData(features=[A_1, ..., A_m], targets=[b_1, ..., b_m])     # one array pair per agent
    result = simulate(data, model="least_squares", method="ssl_alm", rounds=3000, seed=0,
                      availability={"kind": "markov", "p": 0.1, "mean_on": 5}, batch_size=None)
    result.x          # the server model as a 1-D numpy array
    result.history    # one dict per logged round: round, objective, stationarity, consensus, distance, ...

`least_squares` is f_i(x) = 1/(2 n_i) ||A_i x - b_i||^2, so the consensus optimum weighs agents equally
(f = sum_i f_i); `logistic` and `mlp` take integer class labels. `batch_size=None` means full-batch
gradients. Step sizes left out of `hyper` come from the data's smoothness and the smallest p_i
(`raylab.federated.methods`). `num_actors` (or `address`) runs the shards on Ray actors; the default runs them
here. `method` may be a list: every method then runs on the same connections and `result.models` has each.
A NaN or infinite objective, iterate norm or consensus gap raises `raylab.results.Diverged`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from raylab.federated.availability import Availability
from raylab.federated.data import ArrayData, DataSpec
from raylab.federated.methods import METHODS, AlmHyper, LocalHyper
from raylab.federated.objectives import ModelSpec
from raylab.federated.server import LocalPool, Server, run_rounds, snapshot
from raylab.federated.spec import Problem
from raylab.results import Diverged

WATCHED = ("objective", "norm", "consensus")     # a non-finite one of these ends the run


@dataclass
class Result:
    x: np.ndarray
    history: list[dict]
    models: dict[str, np.ndarray] = field(default_factory=dict)
    hyper: dict[str, object] = field(default_factory=dict)     # the resolved hyper-parameters per method


def make_methods(names, alm: dict | AlmHyper | None = None, local: dict | LocalHyper | None = None,
                 batch_size: int | None = None):
    """Method objects from names; each gets the record of its hyper_type (AlmHyper: `alm`, LocalHyper: `local`),
    built from a plain dict or given as a record."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"method: unknown {unknown}; expected some of {sorted(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"method: listed twice in {list(names)}")
    given = {AlmHyper: alm, LocalHyper: local}
    out = []
    for name in names:
        cls = METHODS[name]
        record = given[cls.hyper_type]
        hyper = record if isinstance(record, cls.hyper_type) else cls.hyper_type(**(record or {}))
        out.append(cls(hyper, batch_size))
    return out


def check_row(step: int, row: dict, methods) -> None:
    """Raises Diverged naming the first method and metric of WATCHED that is NaN or infinite."""
    for name in methods:
        for key in WATCHED:
            value = row.get(f"{name}_{key}")
            if value is not None and not np.isfinite(value):
                raise Diverged(step, f"{name} {key}", value, "round")


def simulate(data: ArrayData | DataSpec, model: str | ModelSpec = "least_squares",
             method: str | list[str] = "ssl_alm", rounds: int = 1000, seed: int = 0,
             availability: dict | Availability | None = None, batch_size: int | None = None,
             hyper: dict | None = None, eval_every: int = 10, num_actors: int | None = None,
             address: str | None = None, dtype: str = "float64") -> Result:
    """Runs `rounds` rounds and returns the server model(s) and the logged metrics (see the module docstring).
    `hyper` holds SSL-ALM's keys (eta, tau, beta, rho, mu, M_y, residual, ...) and/or the local methods'
    (local_steps, local_lr, prox_mu, server_lr, weighting), each going to the methods that have it."""
    names = [method] if isinstance(method, str) else list(method)
    if isinstance(availability, dict) or availability is None:
        availability = Availability(**(availability or {}))
    model = ModelSpec(name=model) if isinstance(model, str) else model
    problem = Problem(data=data, model=model, availability=availability, seed=seed, dtype=dtype)
    alm_keys, local_keys = set(AlmHyper.__dataclass_fields__), set(LocalHyper.__dataclass_fields__)
    hyper = dict(hyper or {})
    unknown = set(hyper) - alm_keys - local_keys
    if unknown:
        raise ValueError(f"hyper: unknown keys {sorted(unknown)}")
    methods = make_methods(names, {k: v for k, v in hyper.items() if k in alm_keys},
                           {k: v for k, v in hyper.items() if k in local_keys}, batch_size)
    history = []
    with _pool(problem, num_actors, address) as pool:
        server = Server.start(problem, methods, pool, rounds)

        def on_row(done: int, row: dict) -> None:
            history.append({"round": done, **row})
            check_row(done, row, server.methods)

        run_rounds(server, pool, 0, rounds, eval_every=eval_every, on_row=on_row, snap=snapshot(server, pool, 0))
        models = {name: server.x0(name).double().numpy().copy() for name in server.methods}
        resolved = {name: m.hyper for name, m in server.methods.items()}
    return Result(x=models[names[0]], history=history, models=models, hyper=resolved)


@contextlib.contextmanager
def _pool(problem: Problem, num_actors: int | None, address: str | None):
    if num_actors is None and address is None:
        yield LocalPool(problem)
        return
    from raylab.driver import connect
    from raylab.federated.actors import RayPool

    with connect(address, num_cpus=num_actors):
        pool = RayPool(problem, num_actors)
        try:
            yield pool
        finally:
            pool.shutdown()
