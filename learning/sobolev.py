"""Sobolev regression of a value network on (z, V, V_x).

    loss = mean((V_hat - V)^2) / var(V)  +  lambda * mean(|dV_hat/dx - V_x|^2) / mean(|V_x|^2)

With task-space features in the input (z = [x, theta, phi(x)]), dV_hat/dx = dV_hat/dz[x part] +
dphi/dx^T dV_hat/dz[phi part], the exact chain rule, with the per-sample dphi/dx of the data.

Both terms are MSEs divided by a constant of the dataset, so lambda is scale-free; lambda = 0 is
plain regression. The network trains in float64 (the nets are small; the exported artifact is
float64 too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field

from mpc.progress import progress_bar
from sim.specs import Strict

from .datasets import ValueDataset
from .networks import ValueNet

__all__ = [
    "FitResult",
    "SobolevFitSpec",
    "fit_sobolev",
    "grad_x",
    "sobolev_loss",
    "stochastic_jacobian_loss",
]


class SobolevFitSpec(Strict):
    sobolev_lambda: float = Field(default=1.0, ge=0, description="weight of the gradient term")
    epochs: int = Field(default=300, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0, description="Adam, cosine-annealed to lr * 1e-2")
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    set_normalisation: bool = Field(default=True, description="input mean/std from the data")


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def sobolev_loss(
    net: ValueNet,
    z: torch.Tensor,
    v: torch.Tensor,
    gx: torch.Tensor,
    nx: int,
    lam: float,
    v_scale: float,
    g_scale: float,
    create_graph: bool = True,
    jf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = z.detach().requires_grad_(lam > 0)
    v_hat = net(z)
    loss_v = ((v_hat - v) ** 2).mean() / v_scale
    if lam > 0:
        (g_hat,) = torch.autograd.grad(v_hat.sum(), z, create_graph=create_graph)
        loss_g = ((grad_x(g_hat, nx, jf) - gx) ** 2).sum(1).mean() / g_scale
    else:
        loss_g = torch.zeros((), dtype=v.dtype)
    return loss_v + lam * loss_g, loss_v, loss_g


def grad_x(g_z: torch.Tensor, nx: int, jf: torch.Tensor | None) -> torch.Tensor:
    """dV/dx from dV/dz: the state columns, plus the features' part through dphi/dx (the
    features are z's last columns)."""
    if jf is None:
        return g_z[:, :nx]
    return g_z[:, :nx] + torch.einsum("bfx,bf->bx", jf, g_z[:, g_z.shape[1] - jf.shape[1] :])


def _tensors(
    ds: ValueDataset,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return (
        torch.from_numpy(ds.z).double(),
        torch.from_numpy(ds.value).double(),
        torch.from_numpy(ds.grad_x).double(),
        None if ds.jac_features is None else torch.from_numpy(ds.jac_features).double(),
    )


def fit_sobolev(
    net: ValueNet,
    data: ValueDataset,
    spec: SobolevFitSpec,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> FitResult:
    """Train ``net`` in place; returns the per-epoch history (train and validation losses).

    ``optimizer`` (an Adam over ``net``'s parameters) carries its moments across calls, as DVP's
    successive fits do; its learning rate is reset to ``spec.lr`` for this fit's schedule."""
    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    net.double()
    train, val = data.split(spec.val_fraction, rng) if spec.val_fraction > 0 else (data, None)
    z, v, gx, jf = _tensors(train)
    if spec.set_normalisation:
        net.set_normalisation(z.mean(0), z.std(0) if len(z) > 1 else torch.ones(z.shape[1]))
    v_scale = max(float(v.var()) if len(v) > 1 else 1.0, 1e-12)
    g_scale = max(float((gx**2).sum(1).mean()), 1e-12)
    opt = optimizer if optimizer is not None else torch.optim.Adam(net.parameters(), lr=spec.lr)
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] = spec.lr
    steps_per_epoch = math.ceil(len(z) / spec.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=spec.epochs * steps_per_epoch, eta_min=spec.lr * 1e-2
    )
    result = FitResult()
    gen = torch.Generator().manual_seed(spec.seed)
    bar = progress_bar(range(spec.epochs), desc="sobolev fit", unit="epoch", enabled=progress)
    for epoch in bar:
        net.train()
        perm = torch.randperm(len(z), generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            b = perm[i * spec.batch_size : (i + 1) * spec.batch_size]
            loss, _, _ = sobolev_loss(
                net,
                z[b],
                v[b],
                gx[b],
                data.nx,
                spec.sobolev_lambda,
                v_scale,
                g_scale,
                jf=None if jf is None else jf[b],
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        row = {"epoch": float(epoch), "train_loss": total / len(z)}
        if val is not None and len(val):
            zv, vv, gv, jv = _tensors(val)
            _, lv, lg = sobolev_loss(
                net, zv, vv, gv, data.nx, 1.0, v_scale, g_scale, create_graph=False, jf=jv
            )
            row.update(val_value_nmse=float(lv.detach()), val_grad_nmse=float(lg.detach()))
        result.history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.2e}")
        if callback is not None:
            callback(epoch, row)
    net.eval()
    return result


def stochastic_jacobian_loss(
    f: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    jac_target: torch.Tensor,
    v: torch.Tensor,
    n_cols: int,
) -> torch.Tensor:
    """Stochastic Sobolev term (Czarnecki et al. 2017; Le Lidec et al., after eq. 8):
    mean_b 1/2 ||v_b^T J_target,b - d/dz (v_b^T f(z_b))[:n_cols]||^2 for one direction v_b per
    sample, with J_target of shape (B, n_out, n_cols): one backward pass for the whole batch
    instead of n_out. Its expectation over unit v is ||J_target - df/dz||_F^2 / (2 n_out)."""
    z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad((v * f(z)).sum(), z, create_graph=True)
    target = torch.einsum("bo,boc->bc", v, jac_target)
    return 0.5 * ((g[:, :n_cols] - target) ** 2).sum(1).mean()
