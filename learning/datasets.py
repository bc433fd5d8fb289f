"""Datasets of (z, V, V_x) samples for Sobolev regression.

z = [x, theta] is the network input (state, then task parameters), or [x, theta, phi(x)] with
task-space features (mpc/value/features.py), whose Jacobians dphi/dx then ride along so that
the fit can compare dV/dx (through the features, by the chain rule) with the solver's V_x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ValueDataset", "quadratic_dataset", "action_model_dataset"]


@dataclass
class ValueDataset:
    z: np.ndarray  # (N, n_in) inputs [x, theta]
    value: np.ndarray  # (N,)
    grad_x: np.ndarray  # (N, nx) dV/dx
    nx: int
    jac_features: np.ndarray | None = None  # (N, n_features, nx) dphi/dx of z's last columns

    def __post_init__(self) -> None:
        n = len(self.z)
        if self.value.shape != (n,) or self.grad_x.shape != (n, self.nx):
            raise ValueError(
                f"inconsistent dataset shapes: z {self.z.shape}, value "
                f"{self.value.shape}, grad_x {self.grad_x.shape}, nx {self.nx}"
            )
        if self.jac_features is not None and (
            self.jac_features.ndim != 3
            or self.jac_features.shape[0] != n
            or self.jac_features.shape[2] != self.nx
        ):
            raise ValueError(f"jac_features has shape {self.jac_features.shape}")
        finite = (
            np.isfinite(self.z).all(1) & np.isfinite(self.value) & np.isfinite(self.grad_x).all(1)
        )
        if not finite.all():
            raise ValueError(f"{int((~finite).sum())} samples are not finite")

    def __len__(self) -> int:
        return len(self.z)

    def split(
        self, val_fraction: float, rng: np.random.Generator
    ) -> tuple[ValueDataset, ValueDataset]:
        idx = rng.permutation(len(self))
        n_val = int(round(val_fraction * len(self)))
        va, tr = idx[:n_val], idx[n_val:]
        jf = self.jac_features
        pick = lambda i: ValueDataset(  # noqa: E731
            self.z[i], self.value[i], self.grad_x[i], self.nx, None if jf is None else jf[i]
        )
        return pick(tr), pick(va)


def quadratic_dataset(
    x_ref: np.ndarray,
    weights: np.ndarray,
    n: int,
    rng: np.random.Generator,
    spread: np.ndarray | float = 0.5,
) -> ValueDataset:
    """V(x) = sum_i w_i (x_i - x_ref_i)^2 on x ~ x_ref + U(-spread, spread)."""
    x = x_ref + rng.uniform(-1.0, 1.0, (n, len(x_ref))) * spread
    d = x - x_ref
    return ValueDataset(x, (weights * d * d).sum(1), 2.0 * weights * d, len(x_ref))


def action_model_dataset(
    model,
    x_samples: np.ndarray,
    theta: np.ndarray | None = None,
    on_sample: Callable[[int], None] | None = None,
) -> ValueDataset:
    """(V, V_x) of a Crocoddyl terminal action model (e.g. a C++ quadratic terminal) at
    the given states; ``theta`` (N, p) are appended to the inputs when the value is conditioned."""
    data = model.createData()
    n, nx = x_samples.shape
    value, grad = np.zeros(n), np.zeros((n, nx))
    for i, x in enumerate(x_samples):
        model.calc(data, x)
        model.calcDiff(data, x)
        value[i], grad[i] = data.cost, data.Lx
        if on_sample is not None:
            on_sample(i)
    z = x_samples if theta is None else np.hstack([x_samples, theta])
    return ValueDataset(z.copy(), value, grad, nx)
