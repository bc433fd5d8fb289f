"""The terminal value of a network over task-space features, zero on the goal manifold.

V(x) = ||r~(z(x))||^2 with z(x) = [x, theta, phi(x; target)] (:mod:`mpc.value.features`) and,
when the architecture says ``goal_zero``,

    r~(z) = r(z) - r(z * m),

m being the goal mask: 1 on q and theta, 0 on v and the features. On the goal manifold (EE on
the target, at rest, any null-space posture) v = 0 and phi = 0, so z * m = z and r~ = 0 exactly,
whatever the weights: V = 0 and dV/dx = 2 J^T r~ = 0 there, where a plain fit is only as good as
its error on a nearly flat function. Away from it r~ is as expressive as r.

Derivatives by the chain rule, exactly: J_z = dr/dz - (dr/dz at z*m) diag(m), J_x = J_z dz/dx
with dz/dx = [I; 0; dphi/dx], gradient 2 J_x^T r~ and the Gauss-Newton Hessian 2 J_x^T J_x.
With ``value.evaluator: torchscript`` the module's own ``value_and_derivatives(z)`` gives V, V_z
and V_zz (the same Gauss-Newton form in z) and the chain rule is applied here:
V_x = dz/dx^T V_z, V_xx = dz/dx^T V_zz dz/dx. tests/test_value_features.py holds the two to each
other and both to NumDiff.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .artifact import ValueModel, ValueModelError
from .features import FeatureMap, goal_mask

__all__ = ["FeatureResidualEvaluator", "needs_features"]


def needs_features(model: ValueModel) -> bool:
    """Whether a model needs this evaluator (input features or the goal-zero residual)."""
    return bool(model.metadata.features) or model.metadata.architecture.goal_zero


class FeatureResidualEvaluator:
    """calc / calc_diff of :class:`~mpc.value.terminal.ValueTerminalModel` for such a model."""

    def __init__(self, model: ValueModel, robot: Any, kind: str = "fast") -> None:
        meta, arch, a = model.metadata, model.metadata.architecture, model.arrays
        if arch.kind != "residual":
            raise ValueModelError(
                f"{model.path}: input features and goal_zero need a residual network"
            )
        if robot is None:
            raise ValueModelError(f"{model.path}: its input features need the robot model")
        self.nx = nx = meta.state.nx
        self.n_task = len(meta.task_params)
        self.fmap = FeatureMap(robot.model, robot.ee_frame_id, meta.features)
        n_in = nx + self.n_task + self.fmap.dim
        if arch.n_in != n_in:
            raise ValueModelError(
                f"{model.path}: architecture.n_in {arch.n_in} != nx {nx} + task parameters "
                f"{self.n_task} + features {self.fmap.dim}"
            )
        self._conditioned = meta.target_conditioned
        self._f0 = nx + self.n_task  # where the features start in z
        # Normalisation folded into the first layer: W1 (z - mean) / std + b1.
        inv_std = 1.0 / a["in_std"]
        w1 = a["layers.0.weight"] * inv_std[None, :]
        self.ws = [w1] + [a[f"layers.{i}.weight"] for i in range(1, len(arch.hidden))]
        self.bs = [a["layers.0.bias"] - w1 @ a["in_mean"]] + [
            a[f"layers.{i}.bias"] for i in range(1, len(arch.hidden))
        ]
        self.wo, self.bo = a["out.weight"], a["out.bias"]
        self.mask = goal_mask(nx // 2, self.n_task, meta.features) if arch.goal_zero else None
        self.z = np.zeros(n_in)
        self.dz_dx = np.zeros((n_in, nx))
        self.dz_dx[:nx] = np.eye(nx)
        self.target = np.zeros(3)  # [m] world: where ee_position_error is measured from
        self.module: Any = model.module if kind == "torchscript" else None
        self._key = b""  # bytes of the x that self.z, the activations and _value belong to
        self._value = 0.0
        self._hs: list[np.ndarray] = []
        self._r = np.zeros(self.wo.shape[0])

    # -- task -------------------------------------------------------------------------------------
    def set_params(self, theta: np.ndarray) -> None:
        """Task parameters (a target-conditioned value's EE target, which is then also the goal
        its position error is measured from)."""
        self.z[self.nx : self._f0] = theta
        if self._conditioned:
            self.target[:] = theta
        self._key = b""

    def set_goal(self, target: np.ndarray) -> None:
        """The EE target [m, world] of a value trained for one fixed target."""
        self.target[:] = target
        self._key = b""

    def invalidate(self) -> None:
        self._key = b""

    # -- the network ------------------------------------------------------------------------------
    def _forward(self) -> float:
        """r~ at self.z, keeping the activations for :meth:`_jacobian`; returns V. With the goal
        mask, z and z * m go through the layers side by side (columns of one matrix), which
        halves numpy's per-call cost."""
        zs = self.z[:, None] if self.mask is None else np.stack([self.z, self.z * self.mask], 1)
        self._hs = hs = []
        h = zs
        for w, b in zip(self.ws, self.bs, strict=True):
            h = np.tanh(w @ h + b[:, None])
            hs.append(h)
        rs = self.wo @ h + self.bo[:, None]  # (m, 1 or 2)
        self._r = rs[:, 0] if self.mask is None else rs[:, 0] - rs[:, 1]
        return float(self._r @ self._r)

    def _jacobian(self) -> np.ndarray:
        """dr~/dz from the last forward pass: reverse accumulation, one (m, width) block per
        column, stacked as one (c m, width) matrix so that every product is one 2-D BLAS call."""
        hs = self._hs
        c, m = hs[0].shape[1], self.wo.shape[0]
        rev = (self.wo[None, :, :] * (1.0 - hs[-1] * hs[-1]).T[:, None, :]).reshape(c * m, -1)
        for i in range(len(self.ws) - 1, 0, -1):
            d = (1.0 - hs[i - 1] * hs[i - 1]).T[:, None, :]
            rev = ((rev @ self.ws[i]).reshape(c, m, -1) * d).reshape(c * m, -1)
        js = rev @ self.ws[0]  # (c m, n_in)
        if self.mask is None:
            return js
        return js[:m] - js[m:] * self.mask[None, :]

    # -- the terminal model's calls ---------------------------------------------------------------
    def calc(self, x: np.ndarray) -> float:
        key = x.tobytes()
        if key == self._key:
            return self._value
        self.z[: self.nx] = x
        self.z[self._f0 :] = self.fmap.value(x, self.target)
        self._value = self._module_value() if self.module is not None else self._forward()
        self._key = key
        return self._value

    def calc_diff(self, x: np.ndarray, lx_out: np.ndarray, lxx_out_t: np.ndarray) -> None:
        """Gradient into lx_out, Gauss-Newton Hessian into lxx_out_t (symmetric). Reuses the
        forward pass of a calc at the same x (FDDP's backward pass follows its rollout)."""
        key = x.tobytes()
        phi, dphi_dx = self.fmap.compute(x, self.target)
        self.dz_dx[self._f0 :] = dphi_dx
        if key != self._key:
            self.z[: self.nx] = x
            self.z[self._f0 :] = phi
            self._key = b""  # the value is stale until a forward pass at this x
        if self.module is not None:
            v_z, v_zz = self._module_derivatives()
            lx_out[:] = self.dz_dx.T @ v_z
            lxx_out_t[:] = self.dz_dx.T @ v_zz @ self.dz_dx
            return
        if key != self._key:
            self._value = self._forward()
            self._key = key
        jx = self._jacobian() @ self.dz_dx
        lx_out[:] = 2.0 * (jx.T @ self._r)
        lxx_out_t[:] = 2.0 * (jx.T @ jx)

    def _module_value(self) -> float:
        import torch

        with torch.no_grad():
            return float(self.module(torch.from_numpy(self.z.copy()).unsqueeze(0))[0])

    def _module_derivatives(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            _, g, h = self.module.value_and_derivatives(torch.from_numpy(self.z.copy()))
        return g.numpy(), h.numpy()
