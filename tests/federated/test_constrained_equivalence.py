"""With p = 1 and exact oracles, federated SSL-ALM is `raylab.constrained.solve`'s SSL-ALM on the stacked problem

    min_{u = (x_0, x_1, ..., x_m)} sum_i 1/(2 n_i) ||A_i x_i - b_i||^2   s.t.   x_i - x_0 = 0, i = 1..m,

the server's step size equal to the agents' (server_lr_scale = 1), for both residual estimates (at p = 1 the
held anchor is the current x_0). Checked iterate by iterate to 1e-6 (in fact to rounding), with and without the
dual safeguard firing."""
import pytest
import torch

from raylab.constrained import ConstrainedProblem as StackedProblem
from raylab.constrained import solve
from raylab.federated.availability import Availability
from raylab.federated.data import DataSpec
from raylab.federated.methods import AlmHyper, SslAlm
from raylab.federated.objectives import ModelSpec
from raylab.federated.server import LocalPool, Server
from raylab.federated.spec import Problem

M, D, ROWS, ROUNDS = 4, 3, 6, 60
SPEC = DataSpec(kind="least_squares", num_agents=M, dim=D, rows=ROWS)


def stacked_problem() -> StackedProblem:
    data = SPEC.build(0).agent_data(torch.arange(M), torch.float64)
    A_i, b_i = data.X, data.Y                                   # (m, rows, d), (m, rows)

    def objective(u, _xi=None):
        x = u[D:].view(M, D)
        return 0.5 / ROWS * ((torch.bmm(A_i, x[:, :, None])[:, :, 0] - b_i) ** 2).sum()

    def gradient(u, _xi=None):
        x = u[D:].view(M, D)
        residual = torch.bmm(A_i, x[:, :, None]) - b_i[:, :, None]
        return torch.cat([torch.zeros(D, dtype=torch.float64),
                          torch.bmm(A_i.transpose(1, 2), residual).reshape(-1) / ROWS])

    consensus = torch.cat([-torch.eye(D, dtype=torch.float64).repeat(M, 1),
                           torch.eye(M * D, dtype=torch.float64)], dim=1)   # row block i: x_i - x_0
    return StackedProblem(objective, dim=(M + 1) * D, A=consensus, b=torch.zeros(M * D, dtype=torch.float64),
                          gradient=gradient, full_gradient=gradient, smoothness=50.0)


@pytest.mark.parametrize("residual", ["held", "unbiased"])
@pytest.mark.parametrize("M_y", [1e6, 0.3])
def test_p_one_exact_oracles_match_constrained_solve_on_the_stacked_problem(M_y, residual):
    steps = {"eta": 0.5, "tau": 0.05, "beta": 0.3, "rho": 1.0, "mu": 0.5, "M_y": M_y}
    reference = solve(stacked_problem(), method="ssl_alm", samples=ROUNDS, seed=0, oracle="exact", **steps)

    problem = Problem(data=SPEC, model=ModelSpec(name="least_squares"), availability=Availability(p=1.0),
                      dtype="float64")
    pool = LocalPool(problem, num_shards=2)
    method = SslAlm(AlmHyper(**steps, server_lr_scale=1.0, residual=residual), batch_size=None)
    server = Server.start(problem, [method], pool, ROUNDS)
    resets = 0
    for t in range(ROUNDS):
        resets += server.round(pool, t)["ssl_alm"]["dual_reset"]
    state = pool.gather_state()["methods"]["ssl_alm"]
    z = torch.cat([server.state["ssl_alm"]["z0"], state["z"].reshape(-1)])
    torch.testing.assert_close(z, reference.z, atol=1e-6, rtol=0)
    torch.testing.assert_close(state["y"].reshape(-1), reference.y, atol=1e-6, rtol=0)
    assert resets == reference.final["safeguard_resets"]
    assert (resets > 0) == (M_y < 100)
