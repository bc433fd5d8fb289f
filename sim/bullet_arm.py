"""A fixed-base arm in PyBullet under torque control.

The plant knows nothing of the controller: it takes joint torques, applies external wrenches and
model-mismatch effects, and steps physics. State and the EE point are read back into buffers the
caller owns, so a control loop allocates nothing it does not have to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ._quiet_import import import_pybullet
from .errors import LinkNotFound, NoDisplay, SimError
from .specs import MismatchSpec, RobotSpec, SimSpec

__all__ = ["BulletArm", "display_available"]

pb = import_pybullet()

_HOLD_FORCE = 1e4  # [N or N m] position motor that keeps a locked joint where the config put it
_FRICTION_VEL_EPS = 1e-3  # [rad/s] Coulomb friction is smoothed below this speed


def display_available() -> bool:
    """PyBullet's GUI kills the whole process when X is missing, so ask before connecting."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class BulletArm:
    """One robot in its own PyBullet client (several can coexist in one process)."""

    def __init__(
        self,
        robot: RobotSpec,
        urdf_path: Path,
        sim: SimSpec | None = None,
        mismatch: MismatchSpec | None = None,
        gui: bool = False,
    ) -> None:
        self.robot = robot
        self.sim = sim or SimSpec()
        self.mismatch = mismatch or MismatchSpec()
        self.dt = self.sim.timestep  # [s]
        if gui and not display_available():
            raise NoDisplay()
        self._cid = pb.connect(pb.GUI if gui else pb.DIRECT)
        if self._cid < 0:
            raise SimError("could not connect to the PyBullet physics server")
        c = self._cid
        pb.setGravity(*self.sim.gravity, physicsClientId=c)
        pb.setTimeStep(self.dt, physicsClientId=c)
        self.body = pb.loadURDF(
            str(urdf_path),
            useFixedBase=True,
            flags=pb.URDF_USE_INERTIA_FROM_FILE,
            physicsClientId=c,
        )

        self.link_names: list[str] = []
        self.actuated: list[int] = []
        self.joint_names: list[str] = []
        locked: dict[int, float] = {}
        joint_by_name: dict[str, int] = {}
        for j in range(pb.getNumJoints(self.body, physicsClientId=c)):
            info = pb.getJointInfo(self.body, j, physicsClientId=c)
            jname, jtype, lname = info[1].decode(), info[2], info[12].decode()
            self.link_names.append(lname)
            joint_by_name[jname] = j
            if jtype == pb.JOINT_FIXED:
                continue
            if jtype not in (pb.JOINT_REVOLUTE, pb.JOINT_PRISMATIC):
                raise SimError(f"joint '{jname}' has an unsupported type ({jtype})")
            if jname in robot.locked_joints:
                locked[j] = robot.locked_joints[jname]
            else:
                self.actuated.append(j)
                self.joint_names.append(jname)
        unknown = set(robot.locked_joints) - set(joint_by_name)
        if unknown:
            raise SimError(
                f"locked joint(s) {sorted(unknown)} not in the URDF; joints are: "
                f"{', '.join(joint_by_name)}"
            )
        self.nq = len(self.actuated)
        if self.nq != len(robot.torque_limits):
            raise SimError(
                f"robot '{robot.name}' has {self.nq} actuated joints but torque_limits lists "
                f"{len(robot.torque_limits)}"
            )
        self.ee_link = self.link_index(robot.ee_frame)
        self.ee_offset = np.asarray(robot.ee_offset, dtype=float)
        self.torque_limits = np.asarray(robot.torque_limits, dtype=float)  # [N m]

        # Match Pinocchio: no joint damping, no link damping, no hidden velocity motors.
        damping = self.mismatch.joint_damping or 0.0
        for j in range(pb.getNumJoints(self.body, physicsClientId=c)):
            pb.changeDynamics(
                self.body,
                j,
                linearDamping=0.0,
                angularDamping=0.0,
                jointDamping=damping,
                physicsClientId=c,
            )
        pb.changeDynamics(self.body, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=c)
        if self.mismatch.payload_kg > 0:
            mass = pb.getDynamicsInfo(self.body, self.ee_link, physicsClientId=c)[0]
            pb.changeDynamics(
                self.body, self.ee_link, mass=mass + self.mismatch.payload_kg, physicsClientId=c
            )
        pb.setJointMotorControlArray(
            self.body, self.actuated, pb.VELOCITY_CONTROL, forces=[0.0] * self.nq, physicsClientId=c
        )
        self._locked = locked
        for j, pos in locked.items():
            pb.resetJointState(self.body, j, pos, 0.0, physicsClientId=c)
            pb.setJointMotorControl2(
                self.body,
                j,
                pb.POSITION_CONTROL,
                targetPosition=pos,
                force=_HOLD_FORCE,
                physicsClientId=c,
            )

        self._rng = np.random.default_rng(self.mismatch.seed)
        self._marker: int | None = None
        self._tau_applied = np.zeros(self.nq)  # [N m] what physics actually received last step
        self._wrenches: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.time = 0.0  # [s]
        self.steps = 0
        if gui:
            cam = self.sim.camera
            pb.resetDebugVisualizerCamera(
                cam.distance,
                cam.yaw,
                cam.pitch,
                [0, 0, 0.4],
                physicsClientId=c,
            )
        self.reset(np.asarray(robot.q0, dtype=float))

    # -- set-up -----------------------------------------------------------------------------------
    def link_index(self, name: str) -> int:
        try:
            return self.link_names.index(name)
        except ValueError:
            raise LinkNotFound(name, self.link_names) from None

    def reset(self, q: np.ndarray, v: np.ndarray | None = None) -> None:
        v = np.zeros(self.nq) if v is None else v
        for i, j in enumerate(self.actuated):
            pb.resetJointState(self.body, j, float(q[i]), float(v[i]), physicsClientId=self._cid)
        self.time, self.steps = 0.0, 0

    def close(self) -> None:
        if self._cid >= 0 and pb.isConnected(self._cid):
            pb.disconnect(self._cid)
        self._cid = -1

    def __enter__(self) -> BulletArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------------
    def read_state(self, q_out: np.ndarray, v_out: np.ndarray) -> None:
        """True joint positions [rad] and velocities [rad/s], written into the given buffers."""
        states = pb.getJointStates(self.body, self.actuated, physicsClientId=self._cid)
        for i, s in enumerate(states):
            q_out[i] = s[0]
            v_out[i] = s[1]

    def add_measurement_noise(self, x: np.ndarray) -> None:
        """Turn a true [q, v] into what the controller measures (configured noise, in place)."""
        n, m = self.nq, self.mismatch
        if m.q_noise_std > 0:
            x[:n] += self._rng.normal(0.0, m.q_noise_std, n)
        if m.v_noise_std > 0:
            x[n:] += self._rng.normal(0.0, m.v_noise_std, n)

    def link_point_world(self, link: int, offset_local: np.ndarray | None = None) -> np.ndarray:
        """World position [m] of a point fixed in a link's URDF frame."""
        state = pb.getLinkState(
            self.body, link, computeForwardKinematics=True, physicsClientId=self._cid
        )
        pos = np.asarray(state[4])
        if offset_local is not None and offset_local.any():
            rot = np.asarray(pb.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            pos = pos + rot @ offset_local
        return pos

    def ee_position_world(self) -> np.ndarray:
        return self.link_point_world(self.ee_link, self.ee_offset)

    @property
    def tau_applied(self) -> np.ndarray:
        """[N m] the torque physics received in the last step (after noise and friction)."""
        return self._tau_applied

    # -- acting -----------------------------------------------------------------------------------
    def set_wrenches(self, wrenches: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """External (link, force [N], torque [N m]) in the world frame, applied every step until
        replaced. PyBullet clears external forces after each step, so they are re-sent."""
        self._wrenches = wrenches

    @property
    def wrenches(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        return self._wrenches

    def step(self, tau: np.ndarray) -> None:
        """Apply joint torques [N m] for one physics step and advance time."""
        c, m = self._cid, self.mismatch
        applied = self._tau_applied
        applied[:] = tau
        if m.torque_noise_std > 0:
            applied += self._rng.normal(0.0, m.torque_noise_std, self.nq)
        if m.joint_friction > 0:
            v = np.fromiter(
                (s[1] for s in pb.getJointStates(self.body, self.actuated, physicsClientId=c)),
                float,
                self.nq,
            )
            applied -= m.joint_friction * np.clip(v / _FRICTION_VEL_EPS, -1.0, 1.0)
        pb.setJointMotorControlArray(
            self.body, self.actuated, pb.TORQUE_CONTROL, forces=applied.tolist(), physicsClientId=c
        )
        for link, force, torque in self._wrenches:
            point = self.link_point_world(link, self.ee_offset if link == self.ee_link else None)
            pb.applyExternalForce(
                self.body, link, force.tolist(), point.tolist(), pb.WORLD_FRAME, physicsClientId=c
            )
            if torque.any():
                pb.applyExternalTorque(
                    self.body, link, torque.tolist(), pb.WORLD_FRAME, physicsClientId=c
                )
        pb.stepSimulation(physicsClientId=c)
        self.steps += 1
        self.time = self.steps * self.dt

    # -- model queries (for agreement tests and diagnostics) --------------------------------------
    def _full_q(self, q: np.ndarray) -> list[float]:
        """PyBullet's dynamics queries want every movable joint, locked ones included."""
        full = []
        for j in range(pb.getNumJoints(self.body, physicsClientId=self._cid)):
            if j in self._locked:
                full.append(self._locked[j])
            elif j in self.actuated:
                full.append(float(q[self.actuated.index(j)]))
        return full

    def _actuated_dofs(self) -> list[int]:
        movable = [
            j
            for j in range(pb.getNumJoints(self.body, physicsClientId=self._cid))
            if j in self._locked or j in self.actuated
        ]
        return [movable.index(j) for j in self.actuated]

    def gravity_torques(self, q: np.ndarray) -> np.ndarray:
        """[N m] PyBullet's gravity torques, including any payload the mismatch added."""
        full = self._full_q(q)
        zeros = [0.0] * len(full)
        tau = pb.calculateInverseDynamics(self.body, full, zeros, zeros, physicsClientId=self._cid)
        return np.asarray(tau)[self._actuated_dofs()]

    def mass_matrix(self, q: np.ndarray) -> np.ndarray:
        """Joint-space inertia [kg m^2] of the actuated joints, locked joints held rigid."""
        m = np.asarray(
            pb.calculateMassMatrix(self.body, self._full_q(q), physicsClientId=self._cid)
        )
        idx = self._actuated_dofs()
        return m[np.ix_(idx, idx)]

    def set_marker(self, position_world: np.ndarray) -> None:
        """A visual-only green sphere (no mass, no collision) at e.g. the EE target [m]."""
        c = self._cid
        if self._marker is None:
            shape = pb.createVisualShape(
                pb.GEOM_SPHERE, radius=0.03, rgbaColor=[0.1, 0.8, 0.2, 0.8], physicsClientId=c
            )
            self._marker = pb.createMultiBody(
                baseMass=0.0,
                baseVisualShapeIndex=shape,
                basePosition=list(position_world),
                physicsClientId=c,
            )
        else:
            pb.resetBasePositionAndOrientation(
                self._marker, list(position_world), [0, 0, 0, 1], physicsClientId=c
            )

    def render(self) -> np.ndarray:
        """An RGB frame (H, W, 3) from the headless tiny renderer."""
        w, h = self.sim.record_size
        cam = self.sim.camera
        view = pb.computeViewMatrixFromYawPitchRoll(
            [0.15, 0.15, 0.35],
            cam.distance,
            cam.yaw,
            cam.pitch,
            0.0,
            2,
            physicsClientId=self._cid,
        )
        proj = pb.computeProjectionMatrixFOV(60.0, w / h, 0.05, 10.0, physicsClientId=self._cid)
        _, _, rgba, _, _ = pb.getCameraImage(
            w, h, view, proj, renderer=pb.ER_TINY_RENDERER, physicsClientId=self._cid
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3]
