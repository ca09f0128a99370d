"""The batched update rules and meter of `raylab.constrained.batched` equal raylab's per-run methods and
StationarityMeter, given the same draws (replayed to the per-run method through a taped problem)."""
import pytest
import torch

from raylab.bench.alm import CooperStep
from raylab.constrained import ConstrainedProblem, StationarityMeter, make_optimizer, sampled_constraint_qp
from raylab.constrained.batched import CHUNK, BatchedMeter, BatchedQP, BatchedRuns, Draws
from raylab.constrained.sets import Box

DT = torch.float64
NOISE, CNOISE, SAMPLES = 0.3, 0.3, 240


class RecordedDraws(Draws):
    def __init__(self, *args):
        super().__init__(*args)
        self.xi_log, self.zeta_log = [], []  # per draw: a batch of values

    def iteration(self):
        xi, zetas = super().iteration()
        self.xi_log += xi
        self.zeta_log += zetas
        return xi, zetas

    def initial_xi(self, count):
        out = super().initial_xi(count)
        self.xi_log += out
        return out


def taped_problem(qp: BatchedQP, problem: ConstrainedProblem, draws: RecordedDraws, b: int) -> ConstrainedProblem:
    """The same QP whose samplers replay run b's draws in order."""
    xis = iter([(e1[b].clone(), e2[b].clone()) for e1, e2 in draws.xi_log])
    zetas = iter([(E[b].clone(), e[b].clone()) for E, e in draws.zeta_log])
    return ConstrainedProblem(problem.objective, qp.n, sample_xi=lambda g: next(xis),
                              full_objective=problem.full_objective, gradient=problem._gradient,
                              full_gradient=problem._full_gradient, X=Box(0.0, 1.0), A=qp.A, b=qp.b,
                              residual=problem._residual, sample_zeta=lambda g: next(zetas), x0=qp.x0,
                              weak_convexity=problem.weak_convexity, smoothness=problem.smoothness)


def hypers_for(method: str, problem) -> list[dict]:
    if method == "cooper_alm":
        return [{"lr": lr, "dual_lr": d, "rho": r} for lr, d, r in ((0.02, 0.5, 2.0), (0.05, 1.0, 0.5), (0.01, 3, 5))]
    base = make_optimizer(problem, method, 4000).hyper
    if method == "sgda":
        return [base, {"tau": 0.05, "eta": 0.5}, {"tau": 0.01, "eta": 2.0}]
    if method == "penalty":
        return [{**base, "power": 0.5, "decay": 0.25, "average": 1.0}, {**base, "rho": 3 * base["rho"], "power": 1.5},
                {**base, "tau": 1.9, "average": 4.0}]  # a weighted average that forgets the start
    return [base, {**base, "tau": 2 * base["tau"], "M_y": 0.3}, {**base, "eta": 3 * base["eta"], "rho": 0.5}]


@pytest.mark.parametrize("method", ["ssl_alm", "storm_alm", "sgda", "penalty", "cooper_alm"])
def test_batched_runs_equal_the_per_run_methods(method):
    problem = sampled_constraint_qp(dim=6, constraints=2, noise=NOISE, constraint_noise=CNOISE, seed=1)
    qp = BatchedQP(problem, NOISE, CNOISE)
    hypers, seeds = hypers_for(method, problem), [4, 5, 6]
    runs = BatchedRuns(method, qp, hypers, SAMPLES, seeds)
    runs.draws = RecordedDraws(seeds, qp.n, qp.k, *BatchedRuns.DRAWS[method])
    outputs = []
    while not runs.done:
        runs.step()
        outputs.append(runs.output().clone())
    for b, hyper in enumerate(hypers):
        p = taped_problem(qp, problem, runs.draws, b)
        opt = CooperStep(p, SAMPLES, 0, **hyper) if method == "cooper_alm" else make_optimizer(p, method, SAMPLES,
                                                                                               **hyper)
        assert opt.T == runs.T
        for t in range(runs.T):
            opt.step()
            assert (opt.output() - outputs[t][b]).abs().max() < 1e-12, (method, b, t)
        assert opt.samples == runs.samples
    if method in ("ssl_alm", "storm_alm"):
        assert int(runs.safeguard_resets[1]) > 0  # the M_y = 0.3 run exercised the safeguard


def test_batched_meter_equals_the_per_run_meter():
    problem = sampled_constraint_qp(dim=10, constraints=3, noise=NOISE, constraint_noise=CNOISE, seed=2)
    qp = BatchedQP(problem, NOISE, CNOISE)
    mu = StationarityMeter(problem).mu
    meter, singles = BatchedMeter(qp, problem, mu), [StationarityMeter(problem) for _ in range(8)]
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(8, 10, generator=gen, dtype=DT)
    for _ in range(2):  # a cold start, then a warm one
        values = meter(z)
        expected = torch.tensor([m(z[b]) for b, m in enumerate(singles)], dtype=DT)
        assert (values - expected).abs().max() < 1e-5 and bool(meter.converged.all())
        z = (z + 0.05 * torch.rand(8, 10, generator=gen, dtype=DT)).clamp(0, 1)


def test_a_runs_draws_depend_on_its_seed_only():
    """A run's noise is the same alone, in a batch, and after other runs are dropped (across a chunk's end)."""
    batch, alone = Draws([7, 8, 9], 4, 2, 1, 2), Draws([8], 4, 2, 1, 2)
    for t in range(CHUNK + 5):
        if t == 3:
            batch.keep(torch.tensor([1, 2]))
        (xi_b,), zetas_b = batch.iteration()
        (xi_a,), zetas_a = alone.iteration()
        row = 1 if t < 3 else 0
        assert torch.equal(xi_b[1][row], xi_a[1][0]) and torch.equal(zetas_b[1][0][row], zetas_a[1][0][0])
