"""Local objectives f_i, vectorised over a batch of agents: each row of x (agents, d) is one agent's parameters.

    LeastSquares(features)               f_i(x) = 1/2 sum_j (a_ij^T x - b_ij)^2          (sum over the agent's rows)
    Logistic(features, classes, bias)    f_i(x) = mean_j cross-entropy (one logit for 2 classes, else softmax)
    MLP(features, hidden, classes)       one tanh hidden layer, mean cross-entropy (nonconvex)

`loss_grad(x, X, Y, w)` takes per-sample weights w (agents, k) with f_i ~ sum_j w_ij loss_ij: the full sample set
with w = 1/n_i (mean) or 1 (sum), or an unbiased minibatch of b rows with w scaled by n_i / b. Least squares and
logistic regression have their gradients in closed form (cheap enough for a million agents); the MLP uses
autograd on the batched parameters (agents are independent, so one backward gives every agent's gradient).
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


class LeastSquares:
    reduction = "sum"

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
    reduction = "mean"

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
    reduction = "mean"

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


MODELS = ("least_squares", "logistic", "mlp")


def make_objective(model: str, features: int, classes: int, hidden: int = 32, bias: bool = True):
    if model == "least_squares":
        if classes:
            raise ValueError("model: least_squares needs real-valued targets (data.name: least_squares)")
        return LeastSquares(features)
    if not classes:
        raise ValueError(f"model: {model} needs class labels, but data.name least_squares has real targets")
    if model == "logistic":
        return Logistic(features, classes, bias)
    if model == "mlp":
        return MLP(features, hidden, classes)
    raise ValueError(f"model: unknown model {model!r}; expected one of {list(MODELS)}")
