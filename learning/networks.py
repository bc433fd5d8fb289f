"""Value networks, written so that ``torch.jit.script`` can export them.

Both take z = [x, theta] (state, then task parameters), normalise it with buffers baked into
the module, and go through tanh hidden layers.

* :class:`ResidualValueNet` (Parag et al. 2022, Sec. III-C): V(z) = ||r(z)||^2 with a vector
  residual r. Gradient 2 J^T r, Hessian by Gauss-Newton 2 J^T J (always PSD).
* :class:`FeedForwardValueNet`: the scalar baseline. Its exact Hessian is analytic too: for a
  tanh MLP, d2V/dz2 = sum_l A_l^T diag(dV/dh_l * tanh''(a_l)) A_l, with A_l = da_l/dz.

``value_and_derivatives(z)`` evaluates one input in float64 without autograd; the tests check it
against autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch
from torch import Tensor, nn

__all__ = ["FeedForwardValueNet", "PolicyNet", "ResidualValueNet", "ValueNet", "make_value_net"]


class _TanhTrunk(nn.Module):
    in_mean: Tensor  # [input units] buffers, saved with the weights
    in_std: Tensor

    def __init__(self, n_in: int, hidden: Sequence[int]) -> None:
        super().__init__()
        widths = [n_in, *hidden]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))

    def set_normalisation(self, mean: Tensor, std: Tensor) -> None:
        """Input statistics; a zero spread (a constant input) is left unscaled."""
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self.in_mean.copy_(mean.to(self.in_mean))
        self.in_std.copy_(std.to(self.in_std))


class ResidualValueNet(_TanhTrunk):
    """V(z) = ||r(z)||^2; with a ``goal_mask`` m, V(z) = ||r(z) - r(z * m)||^2, exactly 0 (and
    its gradient too) wherever z * m = z: on the goal manifold when m zeroes the inputs that
    vanish there (mpc/value/features.py: goal_mask; mpc/value/feature_evaluator.py)."""

    kind: Final[str] = "residual"

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int] = (64, 64, 64),
        residual_dim: int = 16,
        goal_mask: Tensor | None = None,
    ) -> None:
        super().__init__(n_in, hidden)
        self.out = nn.Linear(hidden[-1], residual_dim)
        self.n_in, self.hidden, self.residual_dim = n_in, list(hidden), residual_dim
        self.goal_zero = goal_mask is not None
        mask = torch.ones(n_in) if goal_mask is None else goal_mask
        if mask.shape != (n_in,):
            raise ValueError(f"goal_mask has shape {tuple(mask.shape)}, the input is {n_in} wide")
        # A plain attribute, not a buffer: the weights (state dict, safetensors, their hash) are
        # weights only, and the loader derives the mask from the metadata itself.
        self.goal_mask = mask.to(torch.float64)

    def _plain_residual(self, z: Tensor) -> Tensor:
        h = (z - self.in_mean) / self.in_std
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.out(h)

    def residual(self, z: Tensor) -> Tensor:
        r = self._plain_residual(z)
        if self.goal_zero:
            r = r - self._plain_residual(z * self.goal_mask.to(z.dtype))
        return r

    def forward(self, z: Tensor) -> Tensor:
        r = self.residual(z)
        return (r * r).sum(-1)

    def _residual_and_jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        inv_std = 1.0 / self.in_std.to(torch.float64)
        h = (z - self.in_mean.to(torch.float64)) * inv_std
        jac = torch.diag(inv_std)  # dh/dz, forward mode
        for layer in self.layers:
            w = layer.weight.to(torch.float64)
            h = torch.tanh(w @ h + layer.bias.to(torch.float64))
            jac = (1.0 - h * h).unsqueeze(1) * (w @ jac)
        w_out = self.out.weight.to(torch.float64)
        return w_out @ h + self.out.bias.to(torch.float64), w_out @ jac

    @torch.jit.export
    def value_and_derivatives(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.to(torch.float64)
        r, jr = self._residual_and_jacobian(z)
        if self.goal_zero:
            mask = self.goal_mask.to(torch.float64)
            r0, jr0 = self._residual_and_jacobian(z * mask)
            r = r - r0
            jr = jr - jr0 * mask.unsqueeze(0)
        return (r @ r), 2.0 * (jr.t() @ r), 2.0 * (jr.t() @ jr)


class FeedForwardValueNet(_TanhTrunk):
    kind: Final[str] = "feedforward"

    def __init__(self, n_in: int, hidden: Sequence[int] = (64, 64, 64)) -> None:
        super().__init__(n_in, hidden)
        self.out = nn.Linear(hidden[-1], 1)
        self.n_in, self.hidden, self.residual_dim = n_in, list(hidden), None

    def forward(self, z: Tensor) -> Tensor:
        h = (z - self.in_mean) / self.in_std
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.out(h).squeeze(-1)

    @torch.jit.export
    def value_and_derivatives(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.to(torch.float64)
        inv_std = 1.0 / self.in_std.to(torch.float64)
        h = (z - self.in_mean.to(torch.float64)) * inv_std
        jac = torch.diag(inv_std)
        pre_jacs: list[Tensor] = []  # A_l = da_l/dz
        hs: list[Tensor] = []
        weights: list[Tensor] = []
        for layer in self.layers:
            w = layer.weight.to(torch.float64)
            a_jac = w @ jac
            h = torch.tanh(w @ h + layer.bias.to(torch.float64))
            jac = (1.0 - h * h).unsqueeze(1) * a_jac
            pre_jacs.append(a_jac)
            hs.append(h)
            weights.append(w)
        w_out = self.out.weight.to(torch.float64)[0]
        value = w_out @ h + self.out.bias.to(torch.float64)[0]
        g = w_out  # dV/dh_L
        hess = torch.zeros(z.shape[0], z.shape[0], dtype=torch.float64)
        for i in range(len(hs) - 1, -1, -1):
            hl = hs[i]
            dsig = 1.0 - hl * hl
            d2sig = -2.0 * hl * dsig
            a_jac = pre_jacs[i]
            hess = hess + a_jac.t() @ ((g * d2sig).unsqueeze(1) * a_jac)
            g = weights[i].t() @ (g * dsig)
        return value, g * inv_std, hess


# Either network: what the fit, the export and the trainers accept.
ValueNet = ResidualValueNet | FeedForwardValueNet


def make_value_net(
    kind: str,
    n_in: int,
    hidden: Sequence[int] = (64, 64, 64),
    residual_dim: int = 16,
    goal_mask: Tensor | None = None,
) -> ValueNet:
    if kind == "residual":
        return ResidualValueNet(n_in, hidden, residual_dim, goal_mask)
    if goal_mask is not None:
        raise ValueError("goal_zero needs a residual network (kind: residual)")
    if kind == "feedforward":
        return FeedForwardValueNet(n_in, hidden)
    raise ValueError(f"unknown value network kind '{kind}' (residual | feedforward)")


class PolicyNet(nn.Module):
    """u = pi(z), z = [x, theta]: normalised input, ReLU (or tanh) hidden layers, and a tanh
    output scaled into the control box [u_lb, u_ub] (Le Lidec et al., Sec. II), so the policy
    can never ask for a torque outside the limits it was trained with. The box is a buffer: the
    weights file carries it. mpc/policy/evaluator.py is the same function in numpy."""

    kind: Final[str] = "mlp"
    __constants__ = ["activation"]

    def __init__(
        self,
        n_in: int,
        u_lb: Sequence[float],
        u_ub: Sequence[float],
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"unknown activation {activation!r} (relu | tanh)")
        lb = torch.as_tensor(list(u_lb), dtype=torch.float64)
        ub = torch.as_tensor(list(u_ub), dtype=torch.float64)
        if lb.shape != ub.shape or not bool((ub > lb).all()):
            raise ValueError(f"control box must have u_lb < u_ub, got {u_lb} and {u_ub}")
        widths = [n_in, *hidden]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Linear(widths[-1], len(lb))
        # Start near the box centre: a default-initialised last layer saturates the tanh, and
        # the first rollouts of a 320 N m arm then leave every sensible state.
        with torch.no_grad():
            self.out.weight.mul_(0.01)
            self.out.bias.zero_()
        self.activation = activation
        self.n_in, self.hidden, self.nu = n_in, list(hidden), len(lb)
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.register_buffer("u_lb", lb)
        self.register_buffer("u_ub", ub)

    def set_normalisation(self, mean: Tensor, std: Tensor) -> None:
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self.in_mean.copy_(mean.to(self.in_mean))
        self.in_std.copy_(std.to(self.in_std))

    def forward(self, z: Tensor) -> Tensor:
        h = (z - self.in_mean) / self.in_std
        for layer in self.layers:
            h = torch.relu(layer(h)) if self.activation == "relu" else torch.tanh(layer(h))
        mid = 0.5 * (self.u_ub + self.u_lb)
        half = 0.5 * (self.u_ub - self.u_lb)
        return mid + half * torch.tanh(self.out(h))
