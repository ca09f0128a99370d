"""Local objectives f_i, vectorised over a batch of agents: each row of x (agents, d) is one agent's parameters.

    LeastSquares(features)               f_i(x) = 1/(2 n_i) sum_j (a_ij^T x - b_ij)^2     (mean over the agent's rows)
    Logistic(features, classes, bias)    f_i(x) = mean_j cross-entropy (one logit for 2 classes, else softmax)
    MLP(features, hidden, classes)       one tanh hidden layer, mean cross-entropy (nonconvex)

`loss_grad(x, X, Y, w)` takes per-sample weights w (agents, k) with f_i ~ sum_j w_ij loss_ij: the full sample set
with w = 1/n_i, or an unbiased minibatch of b rows with w = 1/b. `smoothness` estimates each agent's L_i. Least squares and
logistic regression have their gradients in closed form (cheap enough for a million agents); the MLP uses
autograd on the batched parameters (agents are independent, so one backward gives every agent's gradient).
"""
from __future__ import annotations

import math
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
        # X^T delta; with one output a broadcast product is several times faster than a batched gemv
        grad_W = ((X * delta).sum(1) if self.outputs == 1 else torch.bmm(X.transpose(1, 2), delta)).reshape(len(x), -1)
        grad = torch.cat([grad_W, delta.sum(1)], dim=1) if self.bias else grad_W
        return (w * loss).sum(1), grad

    def predict(self, x: Tensor, X: Tensor) -> Tensor:
        logits = self._logits(x[None], X[None])[0]
        return (logits[:, 0] > 0).long() if self.outputs == 1 else logits.argmax(1)


class MLP:
    def __init__(self, features: int, hidden: int, classes: int):
        self.shapes = [(features, hidden), (hidden,), (hidden, classes), (classes,)]
        self.dim = sum(math.prod(s) for s in self.shapes)

    def init(self, seed: int, dtype: torch.dtype) -> Tensor:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, zero biases, the same for every agent."""
        gen = torch.Generator().manual_seed(seed)
        parts = []
        for shape in self.shapes:
            scale = 1 / math.sqrt(shape[0]) if len(shape) == 2 else 0.0
            parts.append(((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).flatten())
        return torch.cat(parts).to(dtype)

    def _logits(self, x: Tensor, X: Tensor) -> Tensor:
        W1, b1, W2, b2 = (p.view(len(x), *s) for p, s in zip(x.split([math.prod(s) for s in self.shapes], 1),
                                                              self.shapes))
        hidden = torch.tanh(torch.bmm(X, W1) + b1[:, None])
        return torch.bmm(hidden, W2) + b2[:, None]

    def loss_grad(self, x: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            loss = -(w * torch.log_softmax(self._logits(x, X), 2).gather(2, Y[:, :, None])[:, :, 0]).sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad

    def predict(self, x: Tensor, X: Tensor) -> Tensor:
        return self._logits(x[None], X[None])[0].argmax(1)


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
    name: Literal["least_squares", "logistic", "mlp"] = "logistic"
    hidden: Annotated[int, Field(ge=1)] = 32      # mlp: hidden units
    bias: bool = True                             # logistic: with an intercept

    def objective(self, features: int, classes: int):
        if self.name == "least_squares":
            if classes:
                raise ValueError("model: least_squares needs real-valued targets (data.kind: least_squares)")
            return LeastSquares(features)
        if not classes:
            raise ValueError(f"model: {self.name} needs class labels, but the data have real-valued targets")
        if self.name == "logistic":
            return Logistic(features, classes, self.bias)
        return MLP(features, self.hidden, classes)
