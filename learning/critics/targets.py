"""First-order TD targets and the Sobolev critic loss, shared by Q-learning and SAC.

The target of a transition (s, a, r, s') is y = r + gamma (1 - done) W(s'), with W the
bootstrap the algorithm uses (max over a grid for Q-learning, the soft value of the target
critics for SAC). Its derivatives follow the chain rule through the dynamics (Schramm et al.,
Sec. 3.1; Gurumurthy et al., eq. 6 and 12):

    grad_s y = grad_s r + gamma (1 - done) (ds'/ds)^T grad_s' W(s'),
    grad_a y = grad_a r + gamma (1 - done) (ds'/da)^T grad_s' W(s'),

where ds'/ds, ds'/da and grad r were computed once per transition from a model (exact, nominal
or finite differences) and stored in the replay buffer, and grad_s' W comes from autograd
through the target networks (everything in the target is detached: stop-gradient).

The critic then minimises (Schramm eq. in Sec. 3.2; Gurumurthy eq. 13-16)

    L = l(Q - y) + beta_s l(grad_s Q - grad_s y) + beta_a l(grad_a Q - grad_a y),

with l squared or Huber, and beta fixed or rebalanced from the ratio of the parameter-gradient
norms (Gurumurthy eq. 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "Batch",
    "GradientBalancer",
    "SobolevTerms",
    "Targets",
    "first_order_targets",
    "sobolev_terms",
]


@dataclass
class Batch:
    s: Tensor  # (B, nx)
    a: Tensor  # (B, nu)
    r: Tensor  # (B,)
    s2: Tensor  # (B, nx)
    done: Tensor  # (B,) 1 where the episode terminated (no bootstrap); truncation is 0
    f_x: Tensor  # (B, nx, nx) ds'/ds
    f_u: Tensor  # (B, nx, nu) ds'/da
    r_x: Tensor  # (B, nx)
    r_u: Tensor  # (B, nu)


@dataclass
class Targets:
    y: Tensor  # (B,)
    dy_ds: Tensor  # (B, nx)
    dy_da: Tensor  # (B, nu)


def first_order_targets(
    bootstrap: Callable[[Tensor], Tensor], batch: Batch, gamma: float, *, gradients: bool = True
) -> Targets:
    """y and its derivatives; ``bootstrap(s2)`` is W(s') per row, differentiable in s'."""
    cont = gamma * (1.0 - batch.done)
    if not gradients:  # the value-only baseline pays for no derivative
        with torch.no_grad():
            y = batch.r + cont * bootstrap(batch.s2)
        zero = torch.zeros(0)
        return Targets(y=y, dy_ds=zero, dy_da=zero)
    s2 = batch.s2.detach().requires_grad_(True)
    w = bootstrap(s2)
    (g,) = torch.autograd.grad(w.sum(), s2)
    y = batch.r + cont * w.detach()
    dy_ds = batch.r_x + cont[..., None] * torch.einsum("...ij,...i->...j", batch.f_x, g)
    dy_da = batch.r_u + cont[..., None] * torch.einsum("...ij,...i->...j", batch.f_u, g)
    return Targets(y=y.detach(), dy_ds=dy_ds.detach(), dy_da=dy_da.detach())


def _elementwise(diff: Tensor, kind: str, delta: float) -> Tensor:
    if kind == "huber":
        zero = torch.zeros_like(diff)
        return torch.nn.functional.huber_loss(diff, zero, reduction="none", delta=delta)
    return diff.square()


def _reduce(per_row: Tensor) -> Tensor:
    """Batch mean (last dim), summed over ensemble members (leading dims): each member's loss
    is its own batch mean, and members never share a gradient."""
    return per_row.mean(dim=-1).sum()


@dataclass
class SobolevTerms:
    value: Tensor  # scalar losses
    grad_s: Tensor
    grad_a: Tensor


def sobolev_terms(
    q_fn: Callable[[Tensor, Tensor], Tensor],
    s: Tensor,
    a: Tensor,
    t: Targets,
    *,
    gradients: bool,
    loss: str = "squared",
    delta: float = 1.0,
) -> SobolevTerms:
    """The three terms of the critic loss for one critic (graph kept for the parameter step).
    Shapes: s (..., B, nx), a (..., B, nu), Q (..., B)."""
    if not gradients:
        q = q_fn(s, a)
        zero = q.new_zeros(())
        return SobolevTerms(_reduce(_elementwise(q - t.y, loss, delta)), zero, zero)
    s = s.detach().requires_grad_(True)
    a = a.detach().requires_grad_(True)
    q = q_fn(s, a)
    dq_ds, dq_da = torch.autograd.grad(q.sum(), (s, a), create_graph=True)
    return SobolevTerms(
        value=_reduce(_elementwise(q - t.y, loss, delta)),
        grad_s=_reduce(_elementwise(dq_ds - t.dy_ds, loss, delta).sum(dim=-1)),
        grad_a=_reduce(_elementwise(dq_da - t.dy_da, loss, delta).sum(dim=-1)),
    )


def _grad_norm(loss: Tensor, params: Sequence[nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(
        torch.sqrt(sum((g.square().sum() for g in grads if g is not None), torch.tensor(0.0)))
    )


class GradientBalancer:
    """beta_s, beta_a: fixed (``zeta``), or every ``every`` updates set to
    zeta * ||d L_q / d phi|| / ||d L_s,a / d phi|| (Gurumurthy et al., eq. 18), so each
    gradient term pulls on the critic's parameters with a fixed share of the value term's pull."""

    def __init__(self, zeta_s: float, zeta_a: float, mode: str, every: int) -> None:
        self.zeta_s, self.zeta_a, self.mode, self.every = zeta_s, zeta_a, mode, every
        self.beta_s, self.beta_a = zeta_s, zeta_a
        self.updates = 0

    def __call__(self, terms: SobolevTerms, params: Sequence[nn.Parameter]) -> tuple[float, float]:
        if self.mode == "gradient_ratio" and self.updates % self.every == 0:
            n_q = _grad_norm(terms.value, params)
            n_s = _grad_norm(terms.grad_s, params) if self.zeta_s else 0.0
            n_a = _grad_norm(terms.grad_a, params) if self.zeta_a else 0.0
            self.beta_s = self.zeta_s * n_q / n_s if n_s > 1e-12 else 0.0
            self.beta_a = self.zeta_a * n_q / n_a if n_a > 1e-12 else 0.0
        self.updates += 1
        return self.beta_s, self.beta_a

    def state_dict(self) -> dict[str, float]:
        return {"beta_s": self.beta_s, "beta_a": self.beta_a, "updates": self.updates}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta_s, self.beta_a = float(state["beta_s"]), float(state["beta_a"])
        self.updates = int(state["updates"])
