"""Local objectives f_i, vectorised over a batch of agents: each row of x (agents, d) is one agent's parameters.

    LeastSquares(features)               f_i(x) = 1/(2 n_i) sum_j (a_ij^T x - b_ij)^2     (mean over the agent's rows)
    Logistic(features, classes, bias)    f_i(x) = mean_j cross-entropy (one logit for 2 classes, else softmax)
    TorchModule(factory, features, classes)   any torch.nn.Module (the built-in `mlp` too), through torch.func

`loss_grad(x, X, Y, w)` takes per-sample weights w (agents, k) with f_i ~ sum_j w_ij loss_ij: the full sample set
with w = 1/n_i, or an unbiased minibatch of b rows with w = 1/b. `smoothness` estimates each agent's L_i.
Least squares and logistic regression have their gradients in closed form (cheap enough for a million
agents); a torch module's come from torch.func.grad under vmap over the agents (one batched evaluation).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field

Tensor = torch.Tensor


class LeastSquares:
    def __init__(self, features: int):
        self.dim = features

    def init(self, seed: int, dtype: torch.dtype) -> Tensor:
        return torch.zeros(self.dim, dtype=dtype)

    def loss_grad(self, x: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        residual = torch.bmm(X, x[:, :, None])[:, :, 0] - Y
        grad = (X * (w * residual)[:, :, None]).sum(1)     # X^T (w r); faster than a batched gemv
        return 0.5 * (w * residual ** 2).sum(1), grad

    def predict(self, x: Tensor, X: Tensor) -> Tensor:
        return X @ x


class Logistic:
    def __init__(self, features: int, classes: int, bias: bool = True):
        self.features, self.classes, self.bias = features, classes, bias
        self.outputs = 1 if classes == 2 else classes
        self.dim = (features + bias) * self.outputs

    def init(self, seed: int, dtype: torch.dtype) -> Tensor:
        return torch.zeros(self.dim, dtype=dtype)

    def _logits(self, x: Tensor, X: Tensor) -> Tensor:
        W = x[:, : self.features * self.outputs].view(len(x), self.features, self.outputs)
        logits = torch.bmm(X, W)
        return logits + x[:, None, self.features * self.outputs:] if self.bias else logits

    def loss_grad(self, x: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        logits = self._logits(x, X)
        if self.outputs == 1:
            s = logits[:, :, 0]
            y = Y.to(s.dtype)
            loss = torch.nn.functional.softplus(s) - y * s
            delta = (w * (torch.sigmoid(s) - y))[:, :, None]
        else:
            log_p = torch.log_softmax(logits, dim=2)
            loss = -log_p.gather(2, Y[:, :, None])[:, :, 0]
            delta = log_p.exp()
            delta.scatter_add_(2, Y[:, :, None], -torch.ones_like(delta[:, :, :1]))
            delta = w[:, :, None] * delta
        # X^T delta as a batched (1 x n) @ (n x d) product: no (agents, n, d) temporary
        grad_W = (torch.bmm(delta.transpose(1, 2), X)[:, 0] if self.outputs == 1
                  else torch.bmm(X.transpose(1, 2), delta)).reshape(len(x), -1)
        grad = torch.cat([grad_W, delta.sum(1)], dim=1) if self.bias else grad_W
        return (w * loss).sum(1), grad

    def predict(self, x: Tensor, X: Tensor) -> Tensor:
        logits = self._logits(x[None], X[None])[0]
        return (logits[:, 0] > 0).long() if self.outputs == 1 else logits.argmax(1)


class TorchModule:
    """Any torch.nn.Module as f_i: its parameters flattened into x, evaluated for all agents of a shard at once
    with torch.func (functional_call under vmap), so an agent's state is the parameter count. The loss is the
    mean cross-entropy for class labels (the module returns logits) and half the mean squared error for real
    targets (the module returns one output per sample)."""

    def __init__(self, factory, features: int, classes: int, where: str = "model.factory"):
        module = factory(features, classes)
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"{where}: returned a {type(module).__name__}, not a torch.nn.Module")
        self.module, self.classes = module, classes
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.sizes = [p.numel() for _, p in module.named_parameters()]
        self.dim = sum(self.sizes)
        self._initial = torch.cat([p.detach().flatten() for p in module.parameters()]).double()

        from torch.func import functional_call, grad_and_value, vmap

        def agent_loss(flat, X, Y, w):
            out = functional_call(self.module, self._unflatten(flat), (X,))
            if self.classes:
                losses = -torch.log_softmax(out, -1).gather(-1, Y[:, None])[:, 0]
            else:
                losses = 0.5 * (out.reshape(len(X)) - Y) ** 2
            return (w * losses).sum()

        self._loss_grad = vmap(grad_and_value(agent_loss))
        self._forward = lambda flat, X: functional_call(self.module, self._unflatten(flat), (X,))

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return {n: p.view(shape) for n, p, shape in zip(self.names, flat.split(self.sizes), self.shapes)}

    def init(self, seed: int, dtype: torch.dtype) -> Tensor:
        """The factory's initial parameters (built under torch.manual_seed(seed) by `ModelSpec.objective`)."""
        return self._initial.to(dtype)

    def loss_grad(self, x: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        self.module.to(x.dtype)
        grad, loss = self._loss_grad(x, X, Y, w)
        return loss, grad

    def predict(self, x: Tensor, X: Tensor) -> Tensor:
        self.module.to(x.dtype)
        out = self._forward(x, X.to(x.dtype))
        return out.argmax(1) if self.classes else out.reshape(len(X))


def mlp(features: int, classes: int, hidden: int = 32) -> torch.nn.Module:
    """The built-in MLP: one tanh hidden layer (nonconvex); real targets get one output."""
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, classes or 1))


def import_factory(path: str, where: str = "model.factory"):
    """`package.module:function` -> the function."""
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{where}: expected 'package.module:function' (got {path!r})")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}: cannot import {path!r} ({type(err).__name__}: {err})") from None
    if not callable(factory):
        raise ValueError(f"{where}: {path!r} is not callable")
    return factory


def smoothness(objective, x: Tensor, X: Tensor, Y: Tensor, w: Tensor, start: Tensor, iterations: int = 50) -> Tensor:
    """Each agent's curvature L_i at x: power iteration on the Hessian through differences of the gradient,
    from the start vectors `start` (agents, d); a lower estimate of the largest eigenvalue (the curvature
    bound itself for least squares, and for logistic regression at x = 0; local for the MLP)."""
    v = start.to(x.dtype)
    _, g0 = objective.loss_grad(x, X, Y, w)
    eps = 1e-3 if x.dtype == torch.float32 else 1e-5
    L = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(iterations):
        v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-30)
        _, g = objective.loss_grad(x + eps * v, X, Y, w)
        v = (g - g0) / eps
        L = torch.linalg.vector_norm(v, dim=1).double()
    return L


@dataclass(frozen=True)
class ModelSpec:
    """The `model:` block: which local objective f_i the agents minimise."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    name: Literal["least_squares", "logistic", "mlp", "module"] = "logistic"
    hidden: Annotated[int, Field(ge=1)] = 32      # mlp: hidden units
    bias: bool = True                             # logistic: with an intercept
    factory: str | None = None                    # module: 'package.module:function', (features, classes) -> Module

    def __post_init__(self):
        if (self.name == "module") != (self.factory is not None):
            raise ValueError("factory: give it exactly when name is module")

    def objective(self, features: int, classes: int, seed: int = 0):
        if self.name == "least_squares":
            if classes:
                raise ValueError("model: least_squares needs real-valued targets (data.kind: least_squares)")
            return LeastSquares(features)
        if self.name == "logistic":
            if not classes:
                raise ValueError("model: logistic needs class labels, but the data have real-valued targets")
            return Logistic(features, classes, self.bias)
        factory = import_factory(self.factory) if self.name == "module" else functools.partial(mlp, hidden=self.hidden)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return TorchModule(factory, features, classes)
