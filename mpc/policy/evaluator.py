"""The numpy evaluator of a policy network u = pi(z), z = [x, theta], and its Jacobian.

The network (``learning.networks.PolicyNet``) normalises z with baked-in statistics, goes through
hidden layers (ReLU, as Le Lidec et al. use, or tanh) and squashes its output into the control
box with a scaled tanh: u = mid + half * tanh(a), mid = (u_ub + u_lb)/2, half = (u_ub - u_lb)/2,
so every action it returns is inside the box it was trained for.

Weights are float64 arrays named as the torch state dict (``in_mean``, ``in_std``, ``u_lb``,
``u_ub``, ``layers.i.weight/bias``, ``out.weight/bias``): nothing here runs code from a file.
``action_and_jacobian`` gives du/dz in forward mode, what the PLAL consensus residual and the
stochastic Sobolev term need; the tests check it against autograd.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["ACTIVATIONS", "PolicyEvaluator"]

ACTIVATIONS = ("relu", "tanh")


class PolicyEvaluator:
    """pi(z) and d pi/dz for one input, float64."""

    def __init__(self, arrays: Mapping[str, np.ndarray], activation: str = "relu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} ({' | '.join(ACTIVATIONS)})")
        self.activation = activation
        f64 = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        self._inv_std = 1.0 / f64["in_std"]
        self._mean = f64["in_mean"]
        n_layers = sum(1 for k in f64 if k.startswith("layers.") and k.endswith(".weight"))
        self._layers = [
            (f64[f"layers.{i}.weight"], f64[f"layers.{i}.bias"]) for i in range(n_layers)
        ]
        self._w_out, self._b_out = f64["out.weight"], f64["out.bias"]
        lb, ub = f64["u_lb"], f64["u_ub"]
        self.u_lb, self.u_ub = lb, ub  # [control units] the box every action lies in
        self._mid, self._half = 0.5 * (ub + lb), 0.5 * (ub - lb)
        self.n_in = len(self._mean)
        self.nu = len(self._b_out)

    def action(self, z: np.ndarray) -> np.ndarray:
        h = (z - self._mean) * self._inv_std
        for w, b in self._layers:
            a = w @ h + b
            h = np.maximum(a, 0.0) if self.activation == "relu" else np.tanh(a)
        return self._mid + self._half * np.tanh(self._w_out @ h + self._b_out)

    def action_and_jacobian(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, du/dz) with du/dz of shape (nu, n_in)."""
        h = (z - self._mean) * self._inv_std
        jac = np.diag(self._inv_std)
        for w, b in self._layers:
            a = w @ h + b
            if self.activation == "relu":
                h = np.maximum(a, 0.0)
                jac = (a > 0.0)[:, None] * (w @ jac)
            else:
                h = np.tanh(a)
                jac = (1.0 - h * h)[:, None] * (w @ jac)
        s = np.tanh(self._w_out @ h + self._b_out)
        u = self._mid + self._half * s
        return u, (self._half * (1.0 - s * s))[:, None] * (self._w_out @ jac)
