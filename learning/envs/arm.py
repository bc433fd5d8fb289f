"""The MPC's reaching task as a gymnasium environment for critics: the sim package's arm in
PyBullet under torque control is the "real" system, the MPC's own Pinocchio/Crocoddyl model is
the nominal one that gives first-order critics their Jacobians.

* **Action**: a normalised joint acceleration that the nominal model's inverse dynamics turns
  into a torque, u = clip(RNEA(q, v, a * action_scale), -tau_max, tau_max) with a in [-1, 1]^nq.
  Not a raw torque: the iiwa's wrist is ~10^4 times lighter than its shoulder, so one torque
  scale either cannot move the shoulder or spins the wrist at 100 rad/s in one knot, and an arm
  that must first learn to hold itself up learns nothing else in a budget of minutes. RNEA is
  the nominal model's: with a payload on the real arm (``payload_kg``) it is wrong, as on a
  robot carrying an unknown load.
* **Dynamics**: u is held for one knot of the MPC config (``ocp.dt``, e.g. 10 ms = 10 physics
  steps at 1 kHz) on :class:`sim.BulletArm`, the config's own plant (its ``mismatch`` section,
  plus ``payload_kg``). PyBullet applies the URDF's joint limits; the nominal model does not
  know them.
* **Reward**: minus the MPC's running cost at (x, u), the knot's ``cost`` (a rate times dt) of
  the OCP's own running model, so a critic's value and a DVP value of that config measure the
  same cost (a critic's is discounted).

:meth:`ArmReachEnv.derivatives` gives (dx'/dx, dx'/da, dr/dx, dr/da) of the nominal knot
composed with the action map: from the running model's ``calcDiff`` and Pinocchio's gravity
derivatives (``nominal``), or by central finite differences of the same map treated as a black
box (``finite_difference``). There is no ``exact`` source: PyBullet gives no derivatives.
"""

from __future__ import annotations

import math
from typing import Literal

import gymnasium as gym
import numpy as np
import pinocchio as pin
from pydantic import Field

from mpc.config import Config, load_config
from mpc.errors import ConfigError
from mpc.ocp import NoTerminal, ReachingOCP
from mpc.robot_model import build_robot
from mpc.value.artifact import StateLayout, task_fingerprint
from sim.bullet_arm import BulletArm
from sim.specs import Strict

from .episodic import StateEpisodeEnv
from .swingup import Derivatives

__all__ = ["ARM_JACOBIAN_SOURCES", "ArmReachEnv", "ArmReachSpec"]

ARM_JACOBIAN_SOURCES = ("nominal", "finite_difference")
_FD_STEP = 1e-6  # central differences of a float64 map: error ~ step^2 * f''' + eps / step


class ArmReachSpec(Strict):
    kind: Literal["arm"] = "arm"
    config: str = Field(description="the MPC config: robot, target, knot dt and running cost")
    set: list[str] = Field(default_factory=list, description="overrides of that config")
    horizon: int = Field(default=100, ge=1, description="knots per episode")
    q_spread: float = Field(default=0.3, ge=0, description="[rad] start box around robot.q0")
    v_spread: float = Field(default=0.0, ge=0, description="[rad/s] start velocities")
    action_scale: float = Field(
        default=20.0, gt=0, description="[rad/s^2] the joint acceleration that a = +-1 asks for"
    )
    payload_kg: float = Field(
        default=0.0, ge=0, description="[kg] on the real arm's EE link only (model mismatch)"
    )


class ArmReachEnv(StateEpisodeEnv):
    """Episodes of ``horizon`` knots reaching the MPC config's target from q0 +- q_spread.

    Observation: x = [q, v] (float32). Action: a in [-1, 1]^nq (module doc). Episodes end by
    truncation; a non-finite state ends one as terminated (``nonfinite`` counts those).
    """

    def __init__(self, spec: ArmReachSpec) -> None:
        self.task = spec
        self.mpc_config: Config = load_config(spec.config, spec.set)
        cfg = self.mpc_config
        urdf, robot = build_robot(cfg)
        self.robot = robot
        self.nq = robot.nq
        super().__init__(2 * robot.nq, spec.horizon)
        self.nu, self.dt = robot.nq, float(cfg.ocp.dt)
        self.angles: list[int] = []  # joint angles live inside limits: no wrap, no cos/sin
        target = np.asarray(cfg.task.target, dtype=float)
        ocp = ReachingOCP(robot, cfg.ocp.model_copy(update={"horizon": 1}), target, NoTerminal())
        self._knot = ocp.running_model
        self._knot_data = self._knot.createData()
        self._pin, self._pin_data = robot.model, robot.model.createData()
        self.tau_max = np.asarray(robot.torque_limits, dtype=float)  # [N m]
        self.scale = float(spec.action_scale)  # [rad/s^2] per unit of action
        self.q0 = np.asarray(cfg.robot.q0, dtype=float)
        self.q_lo = np.maximum(self.q0 - spec.q_spread, robot.q_lower + 0.1)
        self.q_hi = np.minimum(self.q0 + spec.q_spread, robot.q_upper - 0.1)
        self.substeps = round(cfg.ocp.dt / cfg.sim.timestep)
        if self.substeps < 1 or abs(self.substeps * cfg.sim.timestep - cfg.ocp.dt) > 1e-9:
            raise ConfigError(
                cfg.source,
                "ocp.dt",
                f"{cfg.ocp.dt} s is not a whole number of sim.timestep ({cfg.sim.timestep} s): "
                "an action is held for whole physics steps",
            )
        # The config's own plant (its mismatch section), with env.payload_kg on top.
        plant = cfg.mismatch.model_copy(
            update={"payload_kg": cfg.mismatch.payload_kg + spec.payload_kg}
        )
        self.real = BulletArm(cfg.robot, urdf, cfg.sim, plant)
        ones = np.ones(self.nu, dtype=np.float32)
        self.action_space = gym.spaces.Box(-ones, ones)
        bound = np.concatenate([np.full(self.nq, 2 * math.pi), np.full(self.nq, 1.0e3)])
        self.observation_space = gym.spaces.Box(-bound.astype(np.float32), bound.astype(np.float32))
        self._q, self._v = np.zeros(self.nq), np.zeros(self.nq)

    # -- what the value artifacts need ----------------------------------------------------------
    def state_layout(self) -> StateLayout:
        return StateLayout(
            robot=self.mpc_config.robot.name, joint_names=self.robot.joint_names, nx=self.nx
        )

    def value_fingerprint(self) -> str:
        """The MPC's own task fingerprint: the critic's value ends that MPC's horizon."""
        return task_fingerprint(self.mpc_config, [])

    # -- the action map -------------------------------------------------------------------------
    def torque(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """[N m] u(x, a) (module doc)."""
        acc = np.clip(a, -1.0, 1.0) * self.scale
        tau = pin.rnea(self._pin, self._pin_data, x[: self.nq], x[self.nq :], acc)
        return np.clip(tau, -self.tau_max, self.tau_max)

    # -- the episode ----------------------------------------------------------------------------
    def _random_start(self) -> np.ndarray:
        q = self.np_random.uniform(self.q_lo, self.q_hi)
        v = self.np_random.uniform(-self.task.v_spread, self.task.v_spread, self.nq)
        return np.concatenate([q, v])

    def _place(self, x0: np.ndarray) -> np.ndarray:
        self.real.reset(x0[: self.nq], x0[self.nq :])
        return x0.copy()

    def _transition(self, x: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float]:
        u = self.torque(x, action.reshape(-1))
        self._knot.calc(self._knot_data, x, u)
        for _ in range(self.substeps):
            self.real.step(u)
        self.real.read_state(self._q, self._v)
        return np.concatenate([self._q, self._v]), -float(self._knot_data.cost)

    def close(self) -> None:
        self.real.close()

    # -- first-order information ----------------------------------------------------------------
    def nominal_step(self, x: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, float]:
        """(x', r) of the nominal knot under the action map: the black box of the FD source."""
        self._knot.calc(self._knot_data, x, self.torque(x, a))
        return np.array(self._knot_data.xnext), -float(self._knot_data.cost)

    def derivatives(self, x: np.ndarray, a: np.ndarray, source: str) -> Derivatives:
        """(dx'/dx, dx'/da, dr/dx, dr/da) of the nominal knot at (x, a) from ``source``."""
        x = np.asarray(x, dtype=np.float64)
        a = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
        if source == "finite_difference":
            return self._finite_differences(x, a)
        if source != "nominal":
            known = ", ".join(ARM_JACOBIAN_SOURCES)
            raise ValueError(f"unknown Jacobian source {source!r} for the arm ({known})")
        nq = self.nq
        q = x[:nq]
        u = self.torque(x, a)
        self._knot.calc(self._knot_data, x, u)
        self._knot.calcDiff(self._knot_data, x, u)
        d = self._knot_data
        f_x, f_u = np.array(d.Fx), np.array(d.Fu)
        l_x, l_u = np.array(d.Lx), np.array(d.Lu)
        # du/dx and du/da from RNEA's derivatives, zero on a joint the clip holds at its limit.
        free = (np.abs(u) < self.tau_max).astype(float)[:, None]
        dtau_dq, dtau_dv, mass = pin.computeRNEADerivatives(
            self._pin, self._pin_data, q, x[nq:], a * self.scale
        )
        mass = np.triu(mass) + np.triu(mass, 1).T  # only the upper part is filled
        du_dx = free * np.hstack([dtau_dq, dtau_dv])
        du_da = free * mass * self.scale
        return (
            f_x + f_u @ du_dx,
            f_u @ du_da,
            -(l_x + l_u @ du_dx),
            -(l_u @ du_da),
        )

    def _finite_differences(self, x: np.ndarray, a: np.ndarray) -> Derivatives:
        n = self.nx + self.nu
        z = np.concatenate([x, a])
        jac_x = np.empty((self.nx, n))
        grad_r = np.empty(n)
        for i in range(n):
            zp, zm = z.copy(), z.copy()
            zp[i] += _FD_STEP
            zm[i] -= _FD_STEP
            xp, rp = self.nominal_step(zp[: self.nx], zp[self.nx :])
            xm, rm = self.nominal_step(zm[: self.nx], zm[self.nx :])
            jac_x[:, i] = (xp - xm) / (2 * _FD_STEP)
            grad_r[i] = (rp - rm) / (2 * _FD_STEP)
        nx = self.nx
        return jac_x[:, :nx], jac_x[:, nx:], grad_r[:nx], grad_r[nx:]
