"""The log-linear bandit behind GRPO's std normalization: the seed's theory, reproduced numerically.

n questions, K answers each, one correct answer a_i per question and a feature vector x_ij per (question,
answer); the policy is pi(o_j | q_i) = softmax_j(x_ij^T theta) and the reward is 1 for the correct answer, so
J_i(theta) = pi*_i(theta) = pi(o_{a_i} | q_i) and J = mean_i J_i (the expected accuracy).

    grad J_i = pi*_i (x_ia - xbar_i),                 xbar_i = sum_j pi_ij x_ij
    Hess J_i = pi*_i [(x_ia - xbar_i)(x_ia - xbar_i)^T - Cov_i],   Cov_i = sum_j pi_ij (x_ij - xbar_i)(...)^T

With X_max = max_ij ||x_ij||: ||Hess J_i|| <= 4 X_max^2 pi*_i (1 - pi*_i) <= X_max^2 (both terms are PSD and
each has norm at most 4 X_max^2 pi* (1 - pi*)); the spectral norm of the feature matrix X_i is at least
max_j ||x_ij||, so the seed's statement with ||X_i|| follows.

Updates, with infinitely many samples (the exact "deterministic" versions of the seed):
    no_std (REINFORCE, mean baseline):  d_i = E_o[(r - pi*) grad log pi(o)] = grad J_i
    std (GRPO):                         d_i = E_o[(r - pi*) / sqrt(pi*(1 - pi*)) grad log pi(o)]
                                            = grad J_i / sqrt(pi*_i (1 - pi*_i))
    theta <- theta + lr * mean_i d_i
With a finite group of K sampled answers per question the expectation becomes the group average with the group
mean and the group (population) std of the K rewards, as in GRPO.

    bandit, theta0 = make_instance(num_questions=16, num_answers=8, dim=32, init_success=0.2, seed=0)
    theta, rows = train(bandit, theta0, steps=200, lr=1 / bandit.x_max ** 2, mode="std")
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MODES = ("std", "no_std")
STD_EPS = 1e-6  # added to a group's reward std, so a group whose rewards are all equal gets zero advantages


@dataclass(frozen=True)
class LogLinearBandit:
    features: torch.Tensor  # (n, K, d), float64
    correct: torch.Tensor   # (n,), the index of each question's correct answer

    def __post_init__(self):
        if self.features.ndim != 3:
            raise ValueError(f"features: expected shape (questions, answers, dim), got {tuple(self.features.shape)}")
        n, k, _ = self.features.shape
        if k < 2:
            raise ValueError(f"features: need at least 2 answers per question (got {k})")
        if self.correct.shape != (n,) or int(self.correct.min()) < 0 or int(self.correct.max()) >= k:
            raise ValueError(f"correct: expected {n} answer indices in [0, {k}), got {self.correct.tolist()}")

    @property
    def x_max(self) -> float:
        return float(self.features.norm(dim=-1).max())

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.features @ theta, dim=-1)

    def _correct_features(self) -> torch.Tensor:
        return self.features[torch.arange(len(self.correct)), self.correct]

    def success(self, theta: torch.Tensor) -> torch.Tensor:
        """pi*_i(theta) = J_i(theta), for each question."""
        return self.probs(theta).gather(1, self.correct[:, None])[:, 0]

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return self.success(theta).mean()

    def greedy_accuracy(self, theta: torch.Tensor) -> float:
        return float(((self.features @ theta).argmax(-1) == self.correct).double().mean())

    def grads(self, theta: torch.Tensor) -> torch.Tensor:
        """(n, d): grad J_i = pi*_i (x_ia - xbar_i)."""
        p = self.probs(theta)
        xbar = torch.einsum("nk,nkd->nd", p, self.features)
        pstar = p.gather(1, self.correct[:, None])
        return pstar * (self._correct_features() - xbar)

    def hessians(self, theta: torch.Tensor) -> torch.Tensor:
        """(n, d, d): Hess J_i = pi*_i [(x_ia - xbar_i)(x_ia - xbar_i)^T - Cov_pi(x_i)]."""
        p = self.probs(theta)
        xbar = torch.einsum("nk,nkd->nd", p, self.features)
        centred = self.features - xbar[:, None, :]
        cov = torch.einsum("nk,nkd,nke->nde", p, centred, centred)
        gap = self._correct_features() - xbar
        pstar = p.gather(1, self.correct[:, None])[:, :, None]
        return pstar * (gap[:, :, None] * gap[:, None, :] - cov)

    def curvature(self, theta: torch.Tensor) -> torch.Tensor:
        """(n,): the spectral norm ||Hess J_i|| of each question, computed in the K-dimensional answer space:
        Hess J_i = X_i^T M_i X_i with M_i = pi*_i [(e_a - p)(e_a - p)^T - diag(p) + p p^T], whose nonzero
        eigenvalues are those of G^(1/2) M_i G^(1/2), G = X_i X_i^T (K x K, cheap when d is large)."""
        p = self.probs(theta)
        n, k = p.shape
        gap = -p
        gap[torch.arange(n), self.correct] += 1
        pstar = p.gather(1, self.correct[:, None])[:, :, None]
        m = pstar * (gap[:, :, None] * gap[:, None, :] - torch.diag_embed(p) + p[:, :, None] * p[:, None, :])
        evals, evecs = torch.linalg.eigh(self.features @ self.features.transpose(1, 2))
        root = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.transpose(1, 2)
        return torch.linalg.eigvalsh(root @ m @ root).abs().amax(-1)


def reward_variance(bandit: LogLinearBandit, theta: torch.Tensor) -> torch.Tensor:
    """(n,): pi*_i (1 - pi*_i), the variance of the 0/1 reward on question i."""
    s = bandit.success(theta)
    return s * (1 - s)


def exact_direction(bandit: LogLinearBandit, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """(n, d): the expectation over all K answers of advantage x score, with the policy's reward mean and std."""
    _check_mode(mode)
    p = bandit.probs(theta)
    reward = torch.zeros_like(p).scatter_(1, bandit.correct[:, None], 1.0)
    pstar = p.gather(1, bandit.correct[:, None])
    advantage = reward - pstar
    if mode == "std":
        advantage = advantage / torch.sqrt(pstar * (1 - pstar)).clamp_min(1e-150)  # a saturated question: 0
    score = bandit.features - torch.einsum("nk,nkd->nd", p, bandit.features)[:, None, :]  # grad log pi(o_j|q_i)
    return torch.einsum("nk,nk,nkd->nd", p, advantage, score)


def sampled_direction(bandit: LogLinearBandit, theta: torch.Tensor, mode: str, group_size: int,
                      generator: torch.Generator) -> torch.Tensor:
    """(n, d): GRPO's group estimate: K answers sampled per question, group-normalised rewards, mean over K."""
    _check_mode(mode)
    if group_size < 2:
        raise ValueError(f"group_size: a group needs at least 2 answers (got {group_size})")
    p = bandit.probs(theta)
    answers = torch.multinomial(p, group_size, replacement=True, generator=generator)  # (n, K)
    reward = (answers == bandit.correct[:, None]).double()
    advantage = reward - reward.mean(1, keepdim=True)
    if mode == "std":
        advantage = advantage / (reward.std(1, correction=0, keepdim=True) + STD_EPS)
    xbar = torch.einsum("nk,nkd->nd", p, bandit.features)
    score = bandit.features.gather(1, answers[:, :, None].expand(-1, -1, bandit.features.shape[2])) - xbar[:, None]
    return torch.einsum("nk,nkd->nd", advantage, score) / group_size


def step(bandit: LogLinearBandit, theta: torch.Tensor, lr: float, mode: str, group_size: int = 0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One update theta + lr * mean_i d_i; group_size 0 is the exact (infinite-sample) update."""
    if group_size == 0:
        direction = exact_direction(bandit, theta, mode)
    else:
        direction = sampled_direction(bandit, theta, mode, group_size, generator)
    return theta + lr * direction.mean(0)


def train(bandit: LogLinearBandit, theta: torch.Tensor, steps: int, lr: float, mode: str, group_size: int = 0,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[dict]]:
    """`steps` updates; one row of metrics per iteration, measured after the update."""
    rows = []
    for _ in range(steps):
        theta = step(bandit, theta, lr, mode, group_size, generator)
        rows.append(measure(bandit, theta))
    return theta, rows


def measure(bandit: LogLinearBandit, theta: torch.Tensor) -> dict:
    """Expected accuracy J, greedy accuracy, ||grad J||, mean reward variance and the largest ratio of the
    curvature to its bound, ||Hess J_i|| / (4 X_max^2 pi*_i (1 - pi*_i)) (<= 1 by the theory)."""
    var = reward_variance(bandit, theta)
    ratio = bandit.curvature(theta) / (4 * bandit.x_max ** 2 * var).clamp_min(1e-300)
    return {"accuracy": float(bandit.objective(theta)), "greedy_accuracy": bandit.greedy_accuracy(theta),
            "grad_norm": float(bandit.grads(theta).mean(0).norm()), "reward_variance": float(var.mean()),
            "curvature_ratio": float(ratio.max())}


def make_instance(num_questions: int, num_answers: int, dim: int, init_success: float, init_spread: float = 0.0,
                  feature_norm: float = 1.0, init_norm: float = 3.0, orthogonal: bool = False,
                  seed: int = 0) -> tuple[LogLinearBandit, torch.Tensor]:
    """A random bandit and an initial theta at which question i succeeds with probability exactly
    p_i = init_success + U(-init_spread, init_spread).

    Features are uniform on the sphere of radius `feature_norm` (so X_max = feature_norm) with no component along
    theta0, so that the wrong answers start equally likely, except the correct answer's, whose component alpha_i
    along theta0 makes its logit alpha_i ||theta0|| = logit(p_i) + log(K - 1). With
    `orthogonal`, question i's features live in its own block of dim // num_questions coordinates, so the
    questions' gradients are exactly orthogonal (the seed's Assumption 2); theta0 has norm `init_norm` in each
    question's block."""
    if orthogonal and dim < num_questions:
        raise ValueError(f"dim: orthogonal features need dim >= num_questions ({dim} < {num_questions})")
    if not 0 <= init_spread < min(init_success, 1 - init_success):
        raise ValueError(f"init_spread: need 0 <= init_spread < min(p, 1 - p) for init_success p "
                         f"(got {init_spread} with p = {init_success})")
    gen = torch.Generator().manual_seed(seed)
    n, k = num_questions, num_answers
    block = dim // n if orthogonal else dim
    direction = torch.randn(n if orthogonal else 1, block, generator=gen, dtype=torch.float64)
    direction = (direction / direction.norm(dim=-1, keepdim=True)).expand(n, block)  # theta0's unit direction
    raw = torch.randn(n, k, block, generator=gen, dtype=torch.float64)
    raw -= torch.einsum("nkb,nb->nk", raw, direction)[:, :, None] * direction[:, None, :]
    raw = feature_norm * raw / raw.norm(dim=-1, keepdim=True)
    correct = torch.randint(k, (n,), generator=gen)
    target = init_success + (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) * init_spread
    alpha = (torch.logit(target) + math.log(k - 1)) / init_norm
    if float(alpha.abs().max()) >= feature_norm:
        raise ValueError(f"init_norm: {init_norm} is too small to give init_success {init_success} with "
                         f"{num_answers} answers and feature_norm {feature_norm}; raise it")
    rows = torch.arange(n)
    raw[rows, correct] = (alpha[:, None] * direction
                          + torch.sqrt(feature_norm ** 2 - alpha ** 2)[:, None] * raw[rows, correct] / feature_norm)
    if orthogonal:
        features = torch.zeros(n, k, dim, dtype=torch.float64)
        theta0 = torch.zeros(dim, dtype=torch.float64)
        for i in range(n):
            features[i, :, i * block:(i + 1) * block] = raw[i]
            theta0[i * block:(i + 1) * block] = init_norm * direction[i]
    else:
        features, theta0 = raw, init_norm * direction[0]
    return LogLinearBandit(features, correct), theta0


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")

