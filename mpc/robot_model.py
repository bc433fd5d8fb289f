"""The controller's rigid-body model: Pinocchio, built from the same URDF entry as the sim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pinocchio as pin

from sim.errors import UrdfNotFound
from sim.specs import RobotSpec, resolve_urdf

from .config import Config
from .errors import ConfigError, FrameNotFound, JointNotFound, ModelError

__all__ = ["EE_FRAME_NAME", "RobotModel", "build_robot"]

EE_FRAME_NAME = "vmpc_ee"  # operational frame added at ee_frame + ee_offset


class RobotModel:
    """Reduced Pinocchio model (locked joints removed) with an EE operational frame."""

    def __init__(self, spec: RobotSpec, urdf_path: Path) -> None:
        self.spec = spec
        try:
            full = pin.buildModelFromUrdf(str(urdf_path))
        except Exception as exc:  # Pinocchio raises plain RuntimeError/ValueError on a bad URDF
            raise ModelError(f"Pinocchio cannot read {urdf_path}: {exc}") from None
        full_joints = list(full.names)[1:]
        lock_ids, q_ref = [], pin.neutral(full)
        for name, pos in spec.locked_joints.items():
            if not full.existJointName(name):
                raise JointNotFound(name, full_joints)
            jid = full.getJointId(name)
            lock_ids.append(jid)
            q_ref[full.joints[jid].idx_q] = pos
        self.model = pin.buildReducedModel(full, lock_ids, q_ref) if lock_ids else full
        m = self.model
        if m.nq != m.nv:
            raise ModelError(
                f"robot '{spec.name}': only revolute and prismatic joints are "
                f"supported (nq={m.nq}, nv={m.nv})"
            )
        if m.nq != len(spec.torque_limits):
            raise ModelError(
                f"robot '{spec.name}' has {m.nq} actuated joints but torque_limits "
                f"lists {len(spec.torque_limits)}"
            )
        if not m.existFrame(spec.ee_frame):
            raise FrameNotFound(spec.ee_frame, [f.name for f in m.frames])
        parent = m.frames[m.getFrameId(spec.ee_frame)]
        offset = pin.SE3(np.eye(3), np.asarray(spec.ee_offset, dtype=float))
        self.ee_frame_id = m.addFrame(
            pin.Frame(
                EE_FRAME_NAME,
                parent.parentJoint,
                m.getFrameId(spec.ee_frame),
                parent.placement * offset,
                pin.FrameType.OP_FRAME,
            )
        )
        self.data = m.createData()
        self.nq = m.nq
        self.joint_names: list[str] = list(m.names)[1:]
        self.torque_limits = np.asarray(spec.torque_limits, dtype=float)  # [N m]
        self.q_lower = np.asarray(m.lowerPositionLimit, dtype=float)  # [rad]
        self.q_upper = np.asarray(m.upperPositionLimit, dtype=float)
        self.v_limit = np.asarray(m.velocityLimit, dtype=float)  # [rad/s]

    def ee_position_world(self, q: np.ndarray) -> np.ndarray:
        pin.framesForwardKinematics(self.model, self.data, q)
        return self.data.oMf[self.ee_frame_id].translation.copy()

    def gravity_torques(self, q: np.ndarray) -> np.ndarray:
        return pin.computeGeneralizedGravity(self.model, self.data, q).copy()

    def mass_matrix(self, q: np.ndarray) -> np.ndarray:
        M = pin.crba(self.model, self.data, q)
        return np.triu(M) + np.triu(M, 1).T

    def reach(self) -> tuple[np.ndarray, float]:
        """(first joint origin [m], an upper bound on the EE's distance from it [m])."""
        m = self.model
        pin.forwardKinematics(m, self.data, pin.neutral(m))
        pin.updateFramePlacements(m, self.data)
        origin = self.data.oMi[1].translation.copy()
        links = sum(np.linalg.norm(m.jointPlacements[j].translation) for j in range(2, m.njoints))
        ee = m.frames[self.ee_frame_id]
        return origin, float(links + np.linalg.norm(ee.placement.translation))

    def ik_position(
        self,
        target_world: np.ndarray,
        q_init: np.ndarray,
        *,
        tol_m: float = 1e-6,
        max_iter: int = 200,
        damping: float = 1e-4,
    ) -> np.ndarray | None:
        """A configuration inside the joint limits whose EE is at ``target_world`` (damped least
        squares from ``q_init``, position only), or None if it does not get within ``tol_m``."""
        m, d = self.model, self.data
        q = np.clip(np.asarray(q_init, dtype=float), self.q_lower, self.q_upper)
        for _ in range(max_iter):
            pin.computeJointJacobians(m, d, q)
            pin.updateFramePlacements(m, d)
            err = np.asarray(target_world) - d.oMf[self.ee_frame_id].translation  # [m]
            if np.linalg.norm(err) < tol_m:
                return q
            J = pin.getFrameJacobian(m, d, self.ee_frame_id, pin.LOCAL_WORLD_ALIGNED)[:3]
            dq = J.T @ np.linalg.solve(J @ J.T + damping * np.eye(3), err)
            q = np.clip(q + dq, self.q_lower, self.q_upper)
        return None

    def check_reachable(self, target: np.ndarray) -> None:
        origin, radius = self.reach()
        dist = float(np.linalg.norm(np.asarray(target) - origin))
        if dist > radius:
            raise ModelError(
                f"target {np.round(target, 3).tolist()} is unreachable for "
                f"'{self.spec.name}': {dist:.3f} m from its first joint, reach "
                f"{radius:.3f} m"
            )


def build_robot(cfg: Config) -> tuple[Path, RobotModel]:
    """Resolve the URDF and build the Pinocchio model, mapping failures to config keys."""
    try:
        urdf = resolve_urdf(cfg.robot.urdf, cfg.base_dir)
    except UrdfNotFound as exc:
        raise ConfigError(cfg.source, "robot.urdf", str(exc)) from None
    try:
        robot = RobotModel(cfg.robot, urdf)
    except FrameNotFound as exc:
        raise ConfigError(cfg.source, "robot.ee_frame", str(exc)) from None
    except JointNotFound as exc:
        raise ConfigError(cfg.source, "robot.locked_joints", str(exc)) from None
    except ModelError as exc:
        raise ConfigError(cfg.source, "robot", str(exc)) from None
    try:
        robot.check_reachable(np.asarray(cfg.task.target))
    except ModelError as exc:
        raise ConfigError(cfg.source, "task.target", str(exc)) from None
    return urdf, robot
