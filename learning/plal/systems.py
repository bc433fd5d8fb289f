"""The OCP families policies are learned on (Le Lidec et al., Sec. V): a constrained LQR, the
inverted pendulum and the double pendulum (the DVP toys of :mod:`learning.dvp.systems`, reused
with a terminal state cost), and the iiwa reaching task conditioned on the EE target (the MPC's
own OCP; the paper used a UR5).

A family gives one knot's running model (a fresh object per call: PLAL needs one model per knot
for its per-knot multipliers), the terminal model, the control box, and samples problems as rows
[x0, theta] from its box with the run's RNG.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import crocoddyl
import numpy as np
from pydantic import Field

from mpc.value.artifact import StateLayout
from sim.specs import Strict

from ..dvp.systems import ArmSpec, DoublePendulumSpec, PendulumSpec, make_system

__all__ = [
    "POLICY_SYSTEM_KINDS",
    "ArmFamily",
    "ConstrainedLQR",
    "LQRSpec",
    "OCPFamily",
    "PolicySystemSpec",
    "ToyFamily",
    "make_family",
]


class LQRSpec(Strict):
    """x_{t+1} = A x + B u, cost (x'Qx + u'Ru)/2 per knot, |u_i| <= u_max: a double integrator
    per axis (position, velocity) whose box is active from most starts."""

    kind: Literal["lqr"] = "lqr"
    axes: int = Field(default=1, ge=1, le=4, description="independent double integrators")
    dt: float = Field(default=0.1, gt=0, description="[s]")
    q: tuple[float, float] = Field(default=(1.0, 0.1), description="(position, velocity) weights")
    r: float = Field(default=0.1, gt=0, description="control weight")
    u_max: float = Field(default=1.0, gt=0, description="[control units] box half-width")
    box: tuple[tuple[float, float], tuple[float, float]] = Field(
        default=((-2.0, 2.0), (-1.0, 1.0)), description="start box of (position, velocity)"
    )


PolicySystemSpec = Annotated[
    LQRSpec | PendulumSpec | DoublePendulumSpec | ArmSpec, Field(discriminator="kind")
]
POLICY_SYSTEM_KINDS = ("lqr", "pendulum", "double_pendulum", "arm")


class OCPFamily:
    name: str
    nx: int
    nu: int
    dt: float
    task_params: list[str] = []

    def running_model(self) -> Any:
        raise NotImplementedError

    def terminal_model(self) -> Any:
        raise NotImplementedError

    def control_box(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def state_layout(self) -> StateLayout:
        raise NotImplementedError

    def fingerprint(self, spec_json: str) -> str:
        return "sha256:" + hashlib.sha256(spec_json.encode()).hexdigest()

    def set_task(self, theta: np.ndarray) -> None:
        """Apply a problem's task parameters (the arm's EE target) to every model handed out."""

    def init_controls(self, x0: np.ndarray) -> np.ndarray:
        """The usual still guess's control at x0 (the arm holds against gravity)."""
        return np.zeros(self.nu)

    def task_box(self) -> tuple[list[float], list[float]] | None:
        """(min, max) of the task parameters trained on (the arm's target box), or None."""
        return None

    def task_error(self, x: np.ndarray, theta: np.ndarray) -> float | None:
        """How far state x is from the task's goal in task units (the arm: EE to target [m]),
        or None for systems whose goal is the state itself."""
        return None


class ConstrainedLQR(OCPFamily):
    name = "lqr"

    def __init__(self, spec: LQRSpec, terminal_weight: float) -> None:
        self.spec, n, dt = spec, spec.axes, spec.dt
        self.nx, self.nu, self.dt = 2 * n, n, dt
        a1 = np.array([[1.0, dt], [0.0, 1.0]])
        b1 = np.array([[0.5 * dt * dt], [dt]])
        self._A = np.kron(np.eye(n), a1)
        self._B = np.kron(np.eye(n), b1)
        # The running cost is a rate: dt * (x'Qx + u'Ru)/2, like the Euler-integrated toys.
        self._Q = dt * np.kron(np.eye(n), np.diag(spec.q))
        self._R = dt * spec.r * np.eye(n)
        self._terminal_weight = terminal_weight

    def _lqr(self, q: np.ndarray, r: np.ndarray) -> crocoddyl.ActionModelLQR:
        zeros = np.zeros
        return crocoddyl.ActionModelLQR(
            self._A,
            self._B,
            q,
            r,
            zeros((self.nx, self.nu)),
            zeros(self.nx),
            zeros(self.nx),
            zeros(self.nu),
        )

    def running_model(self) -> crocoddyl.ActionModelLQR:
        m = self._lqr(self._Q, self._R)
        m.u_lb, m.u_ub = self.control_box()
        return m

    def terminal_model(self) -> crocoddyl.ActionModelLQR:
        return self._lqr(self._terminal_weight * self._Q / self.dt, self._R)

    def control_box(self) -> tuple[np.ndarray, np.ndarray]:
        u = np.full(self.nu, self.spec.u_max)
        return -u, u

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        (p0, p1), (v0, v1) = self.spec.box
        lo = np.tile([p0, v0], self.spec.axes)
        hi = np.tile([p1, v1], self.spec.axes)
        return rng.uniform(lo, hi, (n, self.nx))

    def state_layout(self) -> StateLayout:
        names = [f"{c}{i}" for i in range(self.spec.axes) for c in ("p", "v")]
        return StateLayout(robot="lqr", joint_names=names, nx=self.nx, layout="vector")


class ToyFamily(OCPFamily):
    """A DVP toy (pendulum, double pendulum) with a terminal state cost."""

    def __init__(self, spec: PendulumSpec | DoublePendulumSpec, terminal_weight: float) -> None:
        self._toy: Any = make_system(spec)
        self.name = self._toy.name
        self.nx, self.nu, self.dt = self._toy.nx, self._toy.nu, self._toy.dt
        self._terminal_weight = terminal_weight

    def running_model(self) -> Any:
        return self._toy.running_model()

    def terminal_model(self) -> Any:
        return self._toy.state_cost_model(self._terminal_weight)

    def control_box(self) -> tuple[np.ndarray, np.ndarray]:
        box: tuple[np.ndarray, np.ndarray] = self._toy.control_box
        return box

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rows: np.ndarray = self._toy.sample(n, rng)
        return rows

    def state_layout(self) -> StateLayout:
        layout: StateLayout = self._toy.state_layout()
        return layout


class ArmFamily(OCPFamily):
    """The MPC's own reaching OCP (same robot, running cost and terminal as the MPC config),
    conditioned on the EE target when ``conditioned`` (z = [q, v, target]). One knot model is
    shared by every knot (the running cost has no per-knot data), so :meth:`set_task` moves
    the target of every model handed out."""

    name = "arm"

    def __init__(self, spec: ArmSpec) -> None:
        from ..dvp.systems import ArmSystem

        self._arm = ArmSystem(spec)  # samples starts and targets as DVP does
        cfg, robot = self._arm.cfg, self._arm.robot
        self.nx, self.nu, self.dt = self._arm.nx, self._arm.nu, self._arm.dt
        self.task_params = list(self._arm.task_params)
        self.cfg, self.robot = cfg, robot
        from mpc.ocp import QuadraticTerminal, ReachingOCP

        ocp_spec = cfg.ocp.model_copy(update={"horizon": 1})
        self._ocp = ReachingOCP(
            robot,
            ocp_spec,
            np.asarray(cfg.task.target, float),
            QuadraticTerminal(ocp_spec.terminal),
        )

    def running_model(self) -> Any:
        return self._ocp.running_model

    def terminal_model(self) -> Any:
        return self._ocp.problem.terminalModel

    def control_box(self) -> tuple[np.ndarray, np.ndarray]:
        limits = np.asarray(self.robot.torque_limits, float)
        return -limits, limits.copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rows: np.ndarray = self._arm.sample(n, rng)
        return rows

    def state_layout(self) -> StateLayout:
        layout: StateLayout = self._arm.state_layout()
        return layout

    def fingerprint(self, spec_json: str) -> str:
        """The MPC's own task fingerprint, so the policy is accepted by that MPC."""
        from mpc.value.artifact import task_fingerprint

        return task_fingerprint(self.cfg, self.task_params)

    def set_task(self, theta: np.ndarray) -> None:
        if len(theta):
            self._ocp.set_target(theta)

    def init_controls(self, x0: np.ndarray) -> np.ndarray:
        torques: np.ndarray = self.robot.gravity_torques(x0[: self.robot.nq])
        return torques

    def task_box(self) -> tuple[list[float], list[float]] | None:
        box: tuple[list[float], list[float]] | None = self._arm.task_box()
        return box

    def task_error(self, x: np.ndarray, theta: np.ndarray) -> float | None:
        target = theta if len(theta) else np.asarray(self.cfg.task.target, float)
        if not np.isfinite(x).all():
            return float("inf")
        ee = self.robot.ee_position_world(x[: self.robot.nq])
        return float(np.linalg.norm(ee - target))  # [m]


def make_family(
    spec: LQRSpec | PendulumSpec | DoublePendulumSpec | ArmSpec, terminal_weight: float
) -> OCPFamily:
    """The family of a config's ``system``. The arm's terminal is its MPC config's own
    (``ocp.terminal``); ``terminal_weight`` applies to the toys."""
    if isinstance(spec, LQRSpec):
        return ConstrainedLQR(spec, terminal_weight)
    if isinstance(spec, ArmSpec):
        return ArmFamily(spec)
    return ToyFamily(spec, terminal_weight)
