"""Task-space input features of a value network, computed from the state with Pinocchio.

A value trained on the raw state [q, v] has to learn forward kinematics to know how far the end
effector is from the target; near the goal, where the true value is nearly flat, that error is
what leaves the learned minimum millimetres off. Giving the network the task-space quantities
the running cost is made of removes that burden:

* ``ee_position_error``: p_ee(q) - target [m], world frame; d/dq = J_lin(q) (LOCAL_WORLD_ALIGNED
  frame Jacobian), d/dv = 0.
* ``ee_velocity``: the EE's linear velocity J_lin(q) v [m/s], world frame; d/dv = J_lin, and
  d/dq from Pinocchio's LOCAL frame-velocity derivatives rotated to the world.

A network's input is z = [x, theta, phi(x; target)]: the state, the task parameters, then the
features in the order the artifact's metadata lists them. This one module computes phi and
dphi/dx for both sides: the MPC's terminal model and the trainer that fits the value (so the two
can never disagree); tests/test_value_features.py checks every derivative against finite
differences. The goal manifold (EE on the target, at rest) is where every feature is zero.

Model/data separation as in Crocoddyl: :class:`FeatureMap` owns its Pinocchio data and output
buffers (one instance per evaluator); :func:`feature_dim` and :data:`FEATURES` are the catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pinocchio as pin

__all__ = ["FEATURES", "FeatureMap", "UnknownFeature", "feature_dim", "goal_mask"]

# name -> width; the loader refuses a model listing any other name. Every one of them is 0 on
# the goal manifold (EE on the target, at rest): goal_mask relies on it.
FEATURES: dict[str, int] = {"ee_position_error": 3, "ee_velocity": 3}


class UnknownFeature(ValueError):
    """A feature name this code cannot compute."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown input feature '{name}' (this version knows {', '.join(FEATURES)})"
        )


def feature_dim(names: Sequence[str]) -> int:
    """Total width of the listed features; raises UnknownFeature."""
    total = 0
    for name in names:
        if name not in FEATURES:
            raise UnknownFeature(name)
        total += FEATURES[name]
    return total


def goal_mask(nq: int, n_task: int, features: Sequence[str]) -> np.ndarray:
    """1 on the inputs a goal state keeps, 0 on those that vanish there: the input layout is
    [q, v, theta, phi]; on the goal manifold v = 0 and every feature is 0, while the posture q
    (any null-space configuration) and the task parameters are free."""
    return np.concatenate(
        [np.ones(nq), np.zeros(nq), np.ones(n_task), np.zeros(feature_dim(features))]
    )


class FeatureMap:
    """phi(x; target) and dphi/dx of one robot's EE frame, into buffers it owns."""

    def __init__(self, model: Any, ee_frame_id: int, names: Sequence[str]) -> None:
        self.names = list(names)
        self.dim = feature_dim(self.names)
        self.model = model
        self.data = model.createData()
        self.frame = ee_frame_id
        self.nq = model.nq
        self.nx = model.nq + model.nv
        self.phi = np.zeros(self.dim)  # [features]
        self.jac = np.zeros((self.dim, self.nx))  # d phi / d x
        self._zero_a = np.zeros(model.nv)
        self._needs_velocity = "ee_velocity" in self.names
        offsets = np.cumsum([0] + [FEATURES[n] for n in self.names])
        self._slots = {
            n: slice(int(a), int(b))
            for n, a, b in zip(self.names, offsets[:-1], offsets[1:], strict=True)
        }

    def compute(self, x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(phi, dphi/dx) at x; both are this map's buffers, overwritten by the next call."""
        m, d, nq, f = self.model, self.data, self.nq, self.frame
        q, v = x[:nq], x[nq:]
        if self._needs_velocity:
            # Fills the joint placements, velocities and Jacobians the frame calls below read.
            pin.computeForwardKinematicsDerivatives(m, d, q, v, self._zero_a)
        else:
            pin.computeJointJacobians(m, d, q)
        pin.updateFramePlacement(m, d, f)
        jac = pin.getFrameJacobian(m, d, f, pin.LOCAL_WORLD_ALIGNED)  # (6, nv)
        for name, s in self._slots.items():
            if name == "ee_position_error":
                self.phi[s] = d.oMf[f].translation - target
                self.jac[s, :nq] = jac[:3]
                self.jac[s, nq:] = 0.0
            else:  # ee_velocity: d(R v_local)/dq = R dv_local/dq - [p_dot]x J_ang
                # (Pinocchio's LOCAL_WORLD_ALIGNED velocity derivatives are not the derivative
                # of the world-aligned linear velocity; the LOCAL ones, rotated, are: NumDiff)
                dv_dq, dv_dv = pin.getFrameVelocityDerivatives(m, d, f, pin.LOCAL)
                rot = d.oMf[f].rotation
                p_dot = jac[:3] @ v
                self.phi[s] = p_dot
                self.jac[s, :nq] = rot @ dv_dq[:3] - pin.skew(p_dot) @ jac[3:]
                self.jac[s, nq:] = jac[:3]
        return self.phi, self.jac

    def value(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """phi alone (a cheaper pass: no derivatives); this map's buffer."""
        m, d, nq, f = self.model, self.data, self.nq, self.frame
        pin.forwardKinematics(m, d, x[:nq], x[nq:])
        pin.updateFramePlacement(m, d, f)
        for name, s in self._slots.items():
            if name == "ee_position_error":
                self.phi[s] = d.oMf[f].translation - target
            else:
                self.phi[s] = pin.getFrameVelocity(m, d, f, pin.LOCAL_WORLD_ALIGNED).linear
        return self.phi

    def batch(self, xs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """phi (N, dim) and dphi/dx (N, dim, nx) of N states, each with its own target (N, 3)."""
        n = len(xs)
        phis, jacs = np.zeros((n, self.dim)), np.zeros((n, self.dim, self.nx))
        for i in range(n):
            phis[i], jacs[i] = self.compute(xs[i], targets[i])
        return phis, jacs
