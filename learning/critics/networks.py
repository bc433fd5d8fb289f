"""Critics Q(s, a) and the squashed-Gaussian SAC actor.

Angles enter every network as (cos, sin), so a critic is periodic where the state is: the
environments wrap their angles, and a network fed the raw angle would have to be discontinuous
at +-pi. The feature map is smooth, so grad_s Q through it is what the Sobolev terms compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "EnsembleMLPCritic",
    "MLPCritic",
    "QuadraticCritic",
    "SquashedGaussianActor",
    "StateFeatures",
]

ACTIVATIONS = ("relu", "tanh", "leaky_relu", "elu")


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}[name]()


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), _activation(activation)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class StateFeatures(nn.Module):
    """x -> [cos x_i, sin x_i for the angles i, the other coordinates]."""

    def __init__(self, nx: int, angles: Sequence[int]) -> None:
        super().__init__()
        self.angles = list(angles)
        self.others = [i for i in range(nx) if i not in self.angles]
        self.dim = len(self.others) + 2 * len(self.angles)

    def forward(self, x: Tensor) -> Tensor:
        if not self.angles:
            return x
        th = x[..., self.angles]
        return torch.cat([torch.cos(th), torch.sin(th), x[..., self.others]], dim=-1)


class MLPCritic(nn.Module):
    """Q(s, a): an MLP on [features(s), a]."""

    def __init__(
        self, nx: int, nu: int, hidden: Sequence[int], activation: str, angles: Sequence[int]
    ) -> None:
        super().__init__()
        self.features = StateFeatures(nx, angles)
        self.net = _mlp(self.features.dim + nu, hidden, 1, activation)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([self.features(s), a], dim=-1)).squeeze(-1)


class _EnsembleLinear(nn.Module):
    """E independent linear layers applied to (E, B, n_in) at once (nn.Linear's init)."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, n_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLPCritic(nn.Module):
    """``members`` independent MLP critics Q(s, a) evaluated together on (E, B, .) inputs:
    Adam is elementwise and the loss a sum over members, so training the ensemble is training
    each member alone, at a fraction of the per-step overhead (the toy's seeds)."""

    def __init__(self, members: int, nx: int, nu: int, hidden: Sequence[int], activation: str):
        super().__init__()
        widths = [nx + nu, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(_EnsembleLinear(members, a, b))
            if i < len(widths) - 2:
                layers.append(_activation(activation))
        self.net = nn.Sequential(*layers)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([s, a], dim=-1)).squeeze(-1)


class QuadraticCritic(nn.Module):
    """Schramm et al.'s six-parameter critic for the 1D toy, ``members`` of them:
    theta_0 + theta_1 s + theta_2 a + theta_3 s^2 + theta_4 s a + theta_5 a^2."""

    def __init__(self, members: int = 1) -> None:
        super().__init__()
        self.theta = nn.Parameter(0.1 * torch.randn(members, 6, 1))

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        s, a = s[..., 0], a[..., 0]
        basis = torch.stack([torch.ones_like(s), s, a, s * s, s * a, a * a], dim=-1)
        return torch.bmm(basis, self.theta).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """a = mid + half tanh(mu(s) + sigma(s) eps) (Haarnoja et al. 2018, App. C), so every
    action is inside the box [u_lb, u_ub]."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
    u_mid: Tensor  # [control units] buffers: the box's centre and half-width
    u_half: Tensor

    def __init__(
        self,
        nx: int,
        u_lb: Sequence[float],
        u_ub: Sequence[float],
        hidden: Sequence[int],
        angles: Sequence[int],
    ) -> None:
        super().__init__()
        self.features = StateFeatures(nx, angles)
        self.nu = len(u_lb)
        self.trunk = _mlp(self.features.dim, hidden[:-1], hidden[-1], "relu")
        self.head = nn.Linear(hidden[-1], 2 * self.nu)
        lb = torch.as_tensor(list(u_lb), dtype=torch.float32)
        ub = torch.as_tensor(list(u_ub), dtype=torch.float32)
        self.register_buffer("u_mid", 0.5 * (ub + lb))
        self.register_buffer("u_half", 0.5 * (ub - lb))

    def _dist(self, s: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.trunk(self.features(s)))
        mean, log_std = self.head(h).chunk(2, dim=-1)
        log_std = self.LOG_STD_MIN + 0.5 * (self.LOG_STD_MAX - self.LOG_STD_MIN) * (
            torch.tanh(log_std) + 1.0
        )
        return mean, log_std

    def sample(self, s: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """(action, log pi(action | s)) for the standard-normal draw ``eps`` (reparametrised:
        differentiable in s and in the parameters)."""
        mean, log_std = self._dist(s)
        pre = mean + log_std.exp() * eps
        squashed = torch.tanh(pre)
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log(self.u_half * (1.0 - squashed.square()) + 1e-6).sum(-1)
        return self.u_mid + self.u_half * squashed, log_prob

    def mean_action(self, s: Tensor) -> Tensor:
        mean, _ = self._dist(s)
        return self.u_mid + self.u_half * torch.tanh(mean)
