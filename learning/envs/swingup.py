"""Swing-up tasks on the project's own Crocoddyl models, in a "real" and a "nominal" version
(Gurumurthy et al., Sec. 5.1): the data come from the real one, the Jacobians that first-order
critics need come from the nominal one, from the real one, or from finite differences.

* **Nominal**: the DVP toy's Pinocchio model and its Crocoddyl running model
  (:class:`learning.dvp.systems.Pendulum` / :class:`~learning.dvp.systems.Cartpole`, free-forward
  dynamics, Euler). Its ``calcDiff`` gives F_x, F_u and the cost gradients.
* **Real**: the same system built with other parameters (``real.overrides``, e.g. 2x the cart's
  and 3x the pole's mass) and stepped by :class:`FrictionDynamics`: viscous damping and Coulomb
  friction on every joint and a deadband on the control, none of which the nominal model knows.

The reward is minus the task's running cost (the Crocoddyl cost model's ``cost``, a rate times
dt) at the applied control: the cost is the task's, not a model's, so it is the same in both
versions. Angles are wrapped into [-pi, pi) after each step (the wrap's Jacobian is the identity
almost everywhere), so "upright" is one state, not one per turn.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import crocoddyl
import gymnasium as gym
import numpy as np
import pinocchio as pin
from pydantic import Field, model_validator

from mpc.value.artifact import StateLayout
from sim.specs import Strict

from ..dvp.systems import CartpoleSpec, PendulumSpec, make_system
from ..dvp.systems.toys import _PinocchioToy
from .episodic import StateEpisodeEnv

__all__ = [
    "JACOBIAN_SOURCES",
    "Derivatives",
    "FrictionDynamics",
    "RealSpec",
    "SwingUpEnv",
    "SwingUpSpec",
]

JACOBIAN_SOURCES = ("nominal", "exact", "finite_difference")
Derivatives = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # f_x, f_u, r_x, r_u

# Which coordinates are angles (wrapped, and fed to critics as cos / sin).
_ANGLES = {"pendulum": [0], "cartpole": [1]}
# Hanging: the start of a swing-up (the goal x = 0 is upright).
_HANGING = {"pendulum": [math.pi, 0.0], "cartpole": [0.0, math.pi, 0.0, 0.0]}


class RealSpec(Strict):
    """What the real system has that the nominal model lacks."""

    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="fields of the system section replaced in the real system, e.g. "
        "{cart_mass: 2.0, pole_mass: 0.3}",
    )
    damping: float = Field(default=0.0, ge=0, description="[N m s/rad] or [N s/m], every joint")
    coulomb: float = Field(default=0.0, ge=0, description="[N m] or [N], every joint")
    coulomb_velocity: float = Field(
        default=0.05, gt=0, description="[rad/s] tanh smoothing of the Coulomb friction"
    )
    deadband: float = Field(default=0.0, ge=0, description="[N m] or [N] on the control")


class SwingUpSpec(Strict):
    system: Annotated[PendulumSpec | CartpoleSpec, Field(discriminator="kind")]
    real: RealSpec = Field(default_factory=RealSpec)
    horizon: int = Field(default=100, ge=1, description="steps per episode")
    start_noise: float = Field(
        default=0.1, ge=0, description="half-width of the uniform noise on the hanging state"
    )

    @model_validator(mode="after")
    def _overrides_exist(self) -> SwingUpSpec:
        fields = type(self.system).model_fields
        unknown = sorted(set(self.real.overrides) - set(fields) - {"kind"})
        if unknown:
            raise ValueError(
                f"real.overrides: {', '.join(unknown)} not a field of the {self.system.kind} "
                f"section ({', '.join(sorted(f for f in fields if f != 'kind'))})"
            )
        return self

    @property
    def angles(self) -> list[int]:
        return list(_ANGLES[self.system.kind])


class FrictionDynamics:
    """x' = f(x, u) of a Pinocchio model with viscous + Coulomb friction and a control deadband,
    integrated as Crocoddyl's Euler does (v' = v + a dt, q' = q + v' dt), with its exact
    Jacobians from Pinocchio's ABA derivatives. Every joint has nq = nv = 1 (revolute or
    prismatic), so states and their tangents coincide."""

    def __init__(
        self,
        model: pin.Model,
        selection: np.ndarray,
        dt: float,
        real: RealSpec,
    ) -> None:
        if model.nq != model.nv:
            raise ValueError("FrictionDynamics needs nq == nv (1-dof joints)")
        self.model, self.data = model, model.createData()
        self.S, self.dt = np.asarray(selection, float), float(dt)  # [-] (nv, nu); [s]
        self.nv, self.nu = self.S.shape
        self.damping, self.coulomb = real.damping, real.coulomb
        self.v_c, self.deadband = real.coulomb_velocity, real.deadband

    def _torque(self, v: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tau, dtau/dv (diagonal), dtau/du."""
        u_eff = np.sign(u) * np.maximum(np.abs(u) - self.deadband, 0.0)
        du = (np.abs(u) > self.deadband).astype(float)
        th = np.tanh(v / self.v_c)
        tau = self.S @ u_eff - self.damping * v - self.coulomb * th
        dtau_dv = -self.damping - self.coulomb * (1.0 - th**2) / self.v_c
        return tau, dtau_dv, self.S * du

    def step(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        q, v = x[: self.nv], x[self.nv :]
        tau, _, _ = self._torque(v, u)
        a = pin.aba(self.model, self.data, q, v, tau)
        v_next = v + a * self.dt
        return np.concatenate([q + v_next * self.dt, v_next])

    def jacobians(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx'/dx, dx'/du)."""
        q, v = x[: self.nv], x[self.nv :]
        tau, dtau_dv, dtau_du = self._torque(v, u)
        da_dq, da_dv, da_dtau = pin.computeABADerivatives(self.model, self.data, q, v, tau)
        da_dtau = np.array(da_dtau)
        da_dtau = np.triu(da_dtau) + np.triu(da_dtau, 1).T  # Minv: only its upper part is filled
        da_dv = np.array(da_dv) + da_dtau * dtau_dv[None, :]
        da_du = da_dtau @ dtau_du
        n, dt = self.nv, self.dt
        dvn = np.hstack([dt * np.array(da_dq), np.eye(n) + dt * da_dv])  # dv'/dx
        dqn = np.hstack([np.eye(n), np.zeros((n, n))]) + dt * dvn  # dq'/dx = [I 0] + dt dv'/dx
        fu = np.vstack([dt * dt * da_du, dt * da_du])
        return np.vstack([dqn, dvn]), fu


class SwingUpEnv(StateEpisodeEnv):
    """A swing-up episode of ``spec.horizon`` steps from near the hanging state.

    Observation: the state x = [q, v] (float32, angles wrapped). Action: u in the control box
    (clipped). Reward: minus the nominal running cost at (x, u). An episode ends by truncation
    at the horizon; a non-finite state ends it as terminated (``nonfinite`` counts those).

    :meth:`derivatives` gives (f_x, f_u, r_x, r_u) at a transition from one of
    :data:`JACOBIAN_SOURCES`: the nominal model's ``calcDiff``, the real dynamics' exact
    Jacobians (what Schramm et al. assume), or Crocoddyl's ``ActionModelNumDiff`` of the nominal
    model (VG-SAC-FD: finite differences of a black box).
    """

    def __init__(self, spec: SwingUpSpec) -> None:
        self.task = spec  # not .spec: gymnasium's EnvSpec lives there
        nominal = make_system(spec.system)
        real_spec = spec.system.model_copy(update=spec.real.overrides)
        real = make_system(type(spec.system).model_validate(real_spec.model_dump()))
        assert isinstance(nominal, _PinocchioToy) and isinstance(real, _PinocchioToy)
        self.nominal_system = nominal  # its state_layout() names the value artifacts' inputs
        super().__init__(nominal.nx, spec.horizon)
        self.nu, self.dt = nominal.nu, nominal.dt
        self._nominal = nominal.running_model()
        self._nominal_data = self._nominal.createData()
        self._numdiff = crocoddyl.ActionModelNumDiff(self._nominal, True)
        self._numdiff_data = self._numdiff.createData()
        self.real = FrictionDynamics(real.pin_model, real.selection, real.dt, spec.real)
        lb, ub = nominal.control_box
        self._lb, self._ub = lb, ub
        self.angles = spec.angles
        self.action_space = gym.spaces.Box(lb.astype(np.float32), ub.astype(np.float32))
        bound = np.full(self.nx, 1.0e3, np.float32)
        bound[self.angles] = math.pi
        self.observation_space = gym.spaces.Box(-bound, bound, dtype=np.float32)
        self._hanging = np.array(_HANGING[spec.system.kind])

    def state_layout(self) -> StateLayout:
        """The value artifacts' input names (the nominal system's)."""
        return self.nominal_system.state_layout()

    def wrap(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float64)
        out[self.angles] = (out[self.angles] + math.pi) % (2.0 * math.pi) - math.pi
        return out

    def _random_start(self) -> np.ndarray:
        noise = self.task.start_noise
        return self._hanging + self.np_random.uniform(-noise, noise, self.nx)

    def _place(self, x0: np.ndarray) -> np.ndarray:
        return self.wrap(x0)

    def _transition(self, x: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float]:
        u = np.clip(action.reshape(-1), self._lb, self._ub)
        self._nominal.calc(self._nominal_data, x, u)
        return self.wrap(self.real.step(x, u)), -float(self._nominal_data.cost)

    def derivatives(self, x: np.ndarray, u: np.ndarray, source: str) -> Derivatives:
        """(dx'/dx, dx'/du, dr/dx, dr/du) at (x, u) from ``source``."""
        x = np.asarray(x, dtype=np.float64)
        u = np.clip(np.asarray(u, dtype=np.float64), self._lb, self._ub)
        if source == "finite_difference":
            self._numdiff.calc(self._numdiff_data, x, u)
            self._numdiff.calcDiff(self._numdiff_data, x, u)
            d = self._numdiff_data
            return self._shaped(d.Fx, d.Fu, -np.array(d.Lx), -np.array(d.Lu))
        self._nominal.calc(self._nominal_data, x, u)
        self._nominal.calcDiff(self._nominal_data, x, u)
        d = self._nominal_data
        r_x, r_u = -np.array(d.Lx), -np.array(d.Lu)
        if source == "nominal":
            return self._shaped(d.Fx, d.Fu, r_x, r_u)
        if source == "exact":
            f_x, f_u = self.real.jacobians(x, u)
            return self._shaped(f_x, f_u, r_x, r_u)
        raise ValueError(f"unknown Jacobian source {source!r} ({', '.join(JACOBIAN_SOURCES)})")

    def _shaped(self, f_x: Any, f_u: Any, r_x: np.ndarray, r_u: np.ndarray) -> Derivatives:
        # eigenpy hands an (nx, 1) Fu over as a 1-D array.
        return (
            np.array(f_x, dtype=np.float64).reshape(self.nx, self.nx),
            np.array(f_u, dtype=np.float64).reshape(self.nx, self.nu),
            np.asarray(r_x, dtype=np.float64).reshape(self.nx),
            np.asarray(r_u, dtype=np.float64).reshape(self.nu),
        )
