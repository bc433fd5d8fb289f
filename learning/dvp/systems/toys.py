"""The toy systems: pendulum swing-up, double pendulum, cartpole balance (underactuated) and the
unicycle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import crocoddyl
import numpy as np
import pinocchio as pin

from mpc.value.artifact import StateLayout

from .base import System
from .croc import JointSubsetActuation
from .specs import CartpoleSpec, DoublePendulumSpec, PendulumSpec, UnicycleSpec

__all__ = ["Cartpole", "DoublePendulum", "Pendulum", "Unicycle"]


def _box_sample(box, n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = np.array(box, float).T
    return rng.uniform(lo, hi, (n, len(lo)))


def _state_cost(state, nu: int, w: np.ndarray) -> crocoddyl.CostModelResidual:
    # WeightedQuad is 0.5 r^T W r: weights doubled so the cost reads sum w_i x_i^2.
    return crocoddyl.CostModelResidual(
        state,
        crocoddyl.ActivationModelWeightedQuad(2.0 * w),
        crocoddyl.ResidualModelState(state, np.zeros(state.nx), nu),
    )


def _control_cost(state, nu: int, w: np.ndarray) -> crocoddyl.CostModelResidual:
    return crocoddyl.CostModelResidual(
        state,
        crocoddyl.ActivationModelWeightedQuad(2.0 * w),
        crocoddyl.ResidualModelControl(state, nu),
    )


class _PinocchioToy(System):
    """Pendulum and cartpole: Pinocchio models with C++ free-forward dynamics."""

    def _setup(
        self,
        model: pin.Model,
        w_x: Sequence[float],
        w_u: Sequence[float],
        u_lb: Sequence[float],
        u_ub: Sequence[float],
        dt: float,
        actuated: int | None = None,
    ) -> None:
        self._model = model
        self._state = crocoddyl.StateMultibody(model)
        self._actuation = (
            crocoddyl.ActuationModelFull(self._state)
            if actuated is None
            else JointSubsetActuation(self._state, [actuated])
        )
        self.nx, self.nu, self.dt = self._state.nx, self._actuation.nu, dt
        self._w_x, self._w_u = np.asarray(w_x, float), np.asarray(w_u, float)
        self._u_lb, self._u_ub = np.asarray(u_lb, float), np.asarray(u_ub, float)
        self._selection = np.zeros((model.nv, self.nu))  # [-] tau = S u
        for col, joint in enumerate(range(model.nv) if actuated is None else [actuated]):
            self._selection[joint, col] = 1.0

    @property
    def pin_model(self) -> pin.Model:
        """The Pinocchio model (the critics' environments step it with their own friction)."""
        return self._model

    @property
    def selection(self) -> np.ndarray:
        """[-] (nv, nu): the joint torques are S u."""
        return self._selection.copy()

    def state_layout(self) -> StateLayout:
        return StateLayout(robot=self.name, joint_names=list(self._model.names)[1:], nx=self.nx)

    def running_model(self) -> crocoddyl.IntegratedActionModelEuler:
        """One knot: w_x ||x||^2 + w_u ||u||^2 on free-forward dynamics, Euler, the torque box."""
        costs = crocoddyl.CostModelSum(self._state, self.nu)
        costs.addCost("x", _state_cost(self._state, self.nu, self._w_x), 1.0)
        costs.addCost("u", _control_cost(self._state, self.nu, self._w_u), 1.0)
        dam = crocoddyl.DifferentialActionModelFreeFwdDynamics(self._state, self._actuation, costs)
        run = crocoddyl.IntegratedActionModelEuler(dam, self.dt)
        run.u_lb, run.u_ub = self._u_lb, self._u_ub
        return run

    def state_cost_model(self, weight: float) -> crocoddyl.IntegratedActionModelEuler:
        """A terminal knot costing ``weight`` * w_x ||x||^2 (Euler with dt = 0: not scaled)."""
        costs = crocoddyl.CostModelSum(self._state, self.nu)
        costs.addCost("x", _state_cost(self._state, self.nu, weight * self._w_x), 1.0)
        dam = crocoddyl.DifferentialActionModelFreeFwdDynamics(self._state, self._actuation, costs)
        return crocoddyl.IntegratedActionModelEuler(dam, 0.0)

    @property
    def control_box(self) -> tuple[np.ndarray, np.ndarray]:
        return self._u_lb.copy(), self._u_ub.copy()

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        problem = crocoddyl.ShootingProblem(
            np.zeros(self.nx), [self.running_model()] * horizon, terminal
        )
        if problem.nthreads != 1:
            problem.nthreads = 1
        return problem, crocoddyl.SolverBoxFDDP(problem)


def _point_mass(mass: float, length: float) -> pin.Inertia:
    """A point mass ``length`` above its joint (along z): upright at angle 0."""
    return pin.Inertia.FromSphere(mass, 1e-3).se3Action(
        pin.SE3(np.eye(3), np.array([0.0, 0.0, length]))
    )


class Pendulum(_PinocchioToy):
    name = "pendulum"
    value_map_axes = ("angle [rad]", "velocity [rad/s]")

    def __init__(self, spec: PendulumSpec) -> None:
        super().__init__()
        model = pin.Model()
        jid = model.addJoint(0, pin.JointModelRY(), pin.SE3.Identity(), "hinge")
        # Mass above the hinge at angle 0: the goal x = 0 is the upright, unstable equilibrium.
        model.appendBodyToJoint(jid, _point_mass(spec.mass, spec.length), pin.SE3.Identity())
        model.lowerPositionLimit[:] = -10.0
        model.upperPositionLimit[:] = 10.0
        self._setup(model, spec.w_x, [spec.w_u], [-spec.torque_limit], [spec.torque_limit], spec.dt)
        self.box = spec.box

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)


class DoublePendulum(_PinocchioToy):
    """Two links, both actuated and torque-limited, upright at x = 0 (Le Lidec et al., Sec. V-B:
    chaotic dynamics, unstable target)."""

    name = "double_pendulum"

    def __init__(self, spec: DoublePendulumSpec) -> None:
        super().__init__()
        model = pin.Model()
        first = model.addJoint(0, pin.JointModelRY(), pin.SE3.Identity(), "shoulder")
        model.appendBodyToJoint(first, _point_mass(spec.mass, spec.length), pin.SE3.Identity())
        second = model.addJoint(
            first,
            pin.JointModelRY(),
            pin.SE3(np.eye(3), np.array([0.0, 0.0, spec.length])),
            "elbow",
        )
        model.appendBodyToJoint(second, _point_mass(spec.mass, spec.length), pin.SE3.Identity())
        model.lowerPositionLimit[:] = -10.0
        model.upperPositionLimit[:] = 10.0
        limit = [spec.torque_limit] * 2
        self._setup(model, spec.w_x, [spec.w_u] * 2, [-t for t in limit], limit, spec.dt)
        self.box = spec.box

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)


class Cartpole(_PinocchioToy):
    name = "cartpole"

    def __init__(self, spec: CartpoleSpec) -> None:
        super().__init__()
        model = pin.Model()
        cart = model.addJoint(0, pin.JointModelPX(), pin.SE3.Identity(), "cart")
        model.appendBodyToJoint(
            cart, pin.Inertia.FromBox(spec.cart_mass, 0.2, 0.1, 0.1), pin.SE3.Identity()
        )
        pole = model.addJoint(cart, pin.JointModelRY(), pin.SE3.Identity(), "pole")
        model.appendBodyToJoint(
            pole, _point_mass(spec.pole_mass, spec.pole_length), pin.SE3.Identity()
        )
        model.lowerPositionLimit[:] = -10.0
        model.upperPositionLimit[:] = 10.0
        f = spec.force_limit
        # Only the cart is actuated. Full actuation with the pole's torque boxed to [0, 0] made
        # BoxFDDP blow its regularisation up on 10 s horizons and converge with the pole hanging
        # (V ~ 25 against 0.14), which ruined the ground truth.
        self._setup(model, spec.w_x, [spec.w_u], [-f], [f], spec.dt, actuated=0)
        self.box = spec.box

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)


class Unicycle(System):
    name = "unicycle"
    value_map_axes = ("x [m]", "y [m]")  # at heading 0

    def __init__(self, spec: UnicycleSpec) -> None:
        super().__init__()
        self._spec = spec
        self._state = crocoddyl.StateVector(3)
        self.nx, self.nu, self.dt = 3, 2, 0.1
        self.box = spec.box

    def state_layout(self) -> StateLayout:
        return StateLayout(robot="unicycle", joint_names=["x", "y", "theta"], nx=3, layout="vector")

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        run = crocoddyl.ActionModelUnicycle()
        run.costWeights = np.array([self._spec.w_x, self._spec.w_u])
        problem = crocoddyl.ShootingProblem(np.zeros(3), [run] * horizon, terminal)
        if problem.nthreads != 1:
            problem.nthreads = 1
        return problem, crocoddyl.SolverFDDP(problem)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)
