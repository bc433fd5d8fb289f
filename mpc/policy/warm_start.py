"""Initial guesses from a learned policy: the closed-loop rollout of u = pi([x, target]) on the
OCP's own running model, as the solver's starting point where the shifted previous solution is a
poor guess (the first solve, a new target, a reset after failures).

The rollout runs on the solve path, never per tick, and only on those events. A rollout that
leaves the state box (the joint range with a margin, 3x the velocity limits: the controller's
own "bad state" bounds) or the finite numbers is not used: the caller falls back to the
gravity-holding guess and counts it.
"""

from __future__ import annotations

import numpy as np

from ..errors import VmpcError
from ..ocp import ReachingOCP
from ..value.artifact import TARGET_PARAMS, check_task
from .artifact import PolicyModel

__all__ = ["Q_MARGIN", "STATE_BOUND", "V_SCALE", "PolicyWarmStart"]

STATE_BOUND = 1e3  # [rad, rad/s] where the URDF gives no limit
Q_MARGIN = 0.1  # [rad] beyond the joint range
V_SCALE = 3.0  # x the URDF velocity limits


class PolicyWarmStart:
    """Rolls a checked policy out on ``ocp``'s running model (one data object, reused)."""

    def __init__(self, policy: PolicyModel, ocp: ReachingOCP, cfg: object) -> None:
        meta = policy.metadata
        mismatch = check_task(policy, cfg, ocp.nx, ocp.robot.joint_names)
        if mismatch is not None:
            raise VmpcError(f"{policy.path}: {mismatch}")
        if meta.architecture.nu != ocp.nu:
            raise VmpcError(
                f"{policy.path}: {meta.architecture.nu} controls, the robot has {ocp.nu}"
            )
        self.policy, self.model_id = policy, policy.model_id
        self._evaluator = policy.evaluator()
        self._conditioned = list(meta.task_params) == list(TARGET_PARAMS)
        self._ocp = ocp
        self._model = ocp.running_model
        self._data = self._model.createData()
        self._z = np.zeros(ocp.nx + (len(TARGET_PARAMS) if self._conditioned else 0))
        lim = np.asarray(ocp.robot.torque_limits, float)
        self._lo, self._hi = -lim, lim  # [N m]
        # The states a guess may visit: the joint range with a margin, 3x the velocity limits
        # (the controller's own "bad state" bounds), finite where the URDF says nothing.
        rb, big = ocp.robot, STATE_BOUND
        q_lo = np.where(np.isfinite(rb.q_lower), rb.q_lower - Q_MARGIN, -big)
        q_hi = np.where(np.isfinite(rb.q_upper), rb.q_upper + Q_MARGIN, big)
        v_hi = np.where(np.isfinite(rb.v_limit), V_SCALE * np.abs(rb.v_limit), big)
        self._x_lo = np.concatenate([q_lo, -v_hi])
        self._x_hi = np.concatenate([q_hi, v_hi])

    def guess(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """(xs, us) of T knots from x towards the OCP's current target, or None when the
        rollout is not finite."""
        T, nx = self._ocp.T, self._ocp.nx
        xs = [np.asarray(x, float).copy()]
        us: list[np.ndarray] = []
        if self._conditioned:
            self._z[nx:] = self._ocp.target
        for _ in range(T):
            self._z[:nx] = xs[-1]
            u = np.clip(self._evaluator.action(self._z), self._lo, self._hi)
            self._model.calc(self._data, xs[-1], u)
            x_next = np.array(self._data.xnext)
            # An exploding rollout stays finite for a while: it must also stay in the state box.
            if not (
                np.isfinite(u).all()
                and np.isfinite(x_next).all()
                and (x_next >= self._x_lo).all()
                and (x_next <= self._x_hi).all()
            ):
                return None
            us.append(u)
            xs.append(x_next)
        return xs, us
