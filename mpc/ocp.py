"""The end-effector reaching OCP in Crocoddyl, built once from the config.

One running model instance is shared by every knot (Crocoddyl keeps one data per knot), so a
target change touches one residual. The terminal knot is a seam: any :class:`TerminalCost`
supplies its action model, and :meth:`ReachingOCP.set_terminal` swaps it between two solves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import crocoddyl
import numpy as np
import pinocchio as pin

from .config import CostWeights, OcpSpec, TerminalSpec
from .robot_model import RobotModel

__all__ = [
    "NoTerminal",
    "PreparedTerminal",
    "QuadraticTerminal",
    "ReachingOCP",
    "RunningCost",
    "TerminalCost",
    "make_integrated",
]


class TerminalCost(ABC):
    """Anything that can end the horizon. ``label`` goes into logs and summaries."""

    label: str

    @abstractmethod
    def make_model(self, ocp: ReachingOCP) -> crocoddyl.ActionModelAbstract:
        """Build the terminal knot's action model (called once per install, off the hot path)."""

    def set_target(self, target: np.ndarray) -> None:  # noqa: B027 - optional hook
        """The EE target moved; terminals conditioned on it update their parameters here."""

    def broken(self) -> bool:
        """True once the terminal has produced a non-finite value or gradient at a finite state
        (the loop then reverts to the previous terminal). The C++ terminals never break."""
        return False


@dataclass
class PreparedTerminal:
    """A terminal ready to install between two solves: its cost object, its built action model,
    an id for logs and a note (e.g. that a fingerprint mismatch was forced)."""

    terminal: TerminalCost
    model: crocoddyl.ActionModelAbstract
    model_id: str
    note: str


def make_integrated(
    dam: crocoddyl.DifferentialActionModelAbstract, integrator: str, dt: float
) -> crocoddyl.ActionModelAbstract:
    if integrator == "euler":
        return crocoddyl.IntegratedActionModelEuler(dam, dt)
    rk = {"rk2": crocoddyl.RKType.two, "rk3": crocoddyl.RKType.three, "rk4": crocoddyl.RKType.four}
    return crocoddyl.IntegratedActionModelRK(dam, rk[integrator], dt)


class NoTerminal(TerminalCost):
    label = "none"

    def make_model(self, ocp: ReachingOCP) -> crocoddyl.ActionModelAbstract:
        costs = crocoddyl.CostModelSum(ocp.state, ocp.nu)
        return ocp.integrate(ocp.differential(costs), 0.0)


class QuadraticTerminal(TerminalCost):
    """EE translation and state regularisation at the last knot (C++ all the way)."""

    label = "quadratic"

    def __init__(self, spec: TerminalSpec) -> None:
        self.spec = spec

    def make_model(self, ocp: ReachingOCP) -> crocoddyl.ActionModelAbstract:
        s = self.spec
        costs = crocoddyl.CostModelSum(ocp.state, ocp.nu)
        if s.ee_translation > 0:
            costs.addCost("ee_translation", ocp.ee_translation_cost(), s.ee_translation)
        if s.state_reg > 0:  # same posture/velocity split as the running cost
            w = ocp.spec.costs
            costs.addCost(
                "state_reg", ocp.state_reg_cost(w.state_reg_q, w.state_reg_v), s.state_reg
            )
        if s.ee_velocity > 0:
            costs.addCost("ee_velocity", ocp.ee_velocity_cost(), s.ee_velocity)
        return ocp.integrate(ocp.differential(costs), 0.0)


class ReachingOCP:
    """Problem and solver for reaching ``target`` [m, world] with the EE."""

    def __init__(
        self,
        robot: RobotModel,
        spec: OcpSpec,
        target: np.ndarray,
        terminal: TerminalCost,
        x0: np.ndarray | None = None,
        nthreads: int = 1,
    ) -> None:
        self.robot, self.spec = robot, spec
        self.state = crocoddyl.StateMultibody(robot.model)
        self.actuation = crocoddyl.ActuationModelFull(self.state)
        self.nu, self.nx, self.T, self.dt = self.actuation.nu, self.state.nx, spec.horizon, spec.dt
        self._target = np.array(target, dtype=float)
        self.x_posture = np.concatenate([np.asarray(robot.spec.posture, float), np.zeros(robot.nq)])
        # Residuals whose reference follows the target, across running, terminal and cost models.
        self._target_residuals: list[crocoddyl.ResidualModelFrameTranslation] = []

        self.running_model = self.integrate(
            self.differential(self.running_costs(spec.costs)), spec.dt
        )
        if spec.torque_bounds:
            self.running_model.u_lb = -robot.torque_limits
            self.running_model.u_ub = robot.torque_limits
        self.terminal = terminal
        terminal.set_target(self._target)
        x0 = self.x_posture.copy() if x0 is None else np.asarray(x0, float)
        self.problem = crocoddyl.ShootingProblem(
            x0, [self.running_model] * self.T, terminal.make_model(self)
        )
        if self.problem.nthreads != nthreads:  # a Python terminal already forces 1 (and warns)
            self.problem.nthreads = nthreads
        self.solver = (crocoddyl.SolverBoxFDDP if spec.torque_bounds else crocoddyl.SolverFDDP)(
            self.problem
        )

    # -- cost building blocks (reused by terminal costs and by learning/) -------------------------
    def ee_translation_cost(self, registry: list | None = None) -> crocoddyl.CostModelResidual:
        """EE-to-target cost; its residual joins ``registry`` (default: the residuals
        :meth:`set_target` moves)."""
        r = crocoddyl.ResidualModelFrameTranslation(
            self.state, self.robot.ee_frame_id, self._target.copy(), self.nu
        )
        (self._target_residuals if registry is None else registry).append(r)
        return crocoddyl.CostModelResidual(self.state, r)

    def state_reg_cost(
        self, q_weight: float = 1.0, v_weight: float = 1.0
    ) -> crocoddyl.CostModelResidual:
        nq = self.robot.nq
        w = np.concatenate([np.full(nq, q_weight), np.full(nq, v_weight)])
        return crocoddyl.CostModelResidual(
            self.state,
            crocoddyl.ActivationModelWeightedQuad(w),
            crocoddyl.ResidualModelState(self.state, self.x_posture.copy(), self.nu),
        )

    def ee_velocity_cost(self) -> crocoddyl.CostModelResidual:
        # Linear part only. LOCAL: its norm equals the world-aligned one, and Crocoddyl's
        # LOCAL_WORLD_ALIGNED derivatives disagree with NumDiff (1e-3, tests/test_ocp.py).
        w = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
        r = crocoddyl.ResidualModelFrameVelocity(
            self.state, self.robot.ee_frame_id, pin.Motion.Zero(), pin.LOCAL, self.nu
        )
        return crocoddyl.CostModelResidual(self.state, crocoddyl.ActivationModelWeightedQuad(w), r)

    def state_limits_cost(self) -> crocoddyl.CostModelResidual:
        rb = self.robot
        bounds = crocoddyl.ActivationBounds(
            np.concatenate([rb.q_lower, -rb.v_limit]),
            np.concatenate([rb.q_upper, rb.v_limit]),
            0.95,
        )
        return crocoddyl.CostModelResidual(
            self.state,
            crocoddyl.ActivationModelQuadraticBarrier(bounds),
            crocoddyl.ResidualModelState(self.state, np.zeros(self.nx), self.nu),
        )

    def running_costs(self, w: CostWeights, registry: list | None = None) -> crocoddyl.CostModelSum:
        costs = crocoddyl.CostModelSum(self.state, self.nu)
        if w.ee_translation > 0:
            costs.addCost("ee_translation", self.ee_translation_cost(registry), w.ee_translation)
        if w.state_reg > 0:
            costs.addCost(
                "state_reg", self.state_reg_cost(w.state_reg_q, w.state_reg_v), w.state_reg
            )
        if w.torque_reg > 0:
            costs.addCost(
                "torque_reg",
                crocoddyl.CostModelResidual(
                    self.state, crocoddyl.ResidualModelControlGrav(self.state, self.nu)
                ),
                w.torque_reg,
            )
        if w.ee_velocity > 0:
            costs.addCost("ee_velocity", self.ee_velocity_cost(), w.ee_velocity)
        if w.state_limits > 0:
            costs.addCost("state_limits", self.state_limits_cost(), w.state_limits)
        return costs

    def differential(
        self, costs: crocoddyl.CostModelSum
    ) -> crocoddyl.DifferentialActionModelFreeFwdDynamics:
        dam = crocoddyl.DifferentialActionModelFreeFwdDynamics(self.state, self.actuation, costs)
        arm = self.spec.armature
        if np.any(np.asarray(arm) != 0):
            dam.armature = np.broadcast_to(np.asarray(arm, float), (self.robot.nq,)).copy()
        return dam

    def integrate(
        self, dam: crocoddyl.DifferentialActionModelAbstract, dt: float
    ) -> crocoddyl.ActionModelAbstract:
        return make_integrated(dam, self.spec.integrator, dt)

    # -- live changes between solves --------------------------------------------------------------
    @property
    def target(self) -> np.ndarray:
        return self._target.copy()

    def set_target(self, target: np.ndarray) -> None:
        self._target[:] = target
        for r in self._target_residuals:
            r.reference = self._target
        self.terminal.set_target(self._target)

    def set_terminal(
        self, terminal: TerminalCost, model: crocoddyl.ActionModelAbstract | None = None
    ) -> None:
        """Swap the terminal knot's model between solves (``model`` if already built)."""
        terminal.set_target(self._target)
        self.problem.updateModel(self.T, model if model is not None else terminal.make_model(self))
        self.terminal = terminal

    # -- evaluation -------------------------------------------------------------------------------
    def running_cost_evaluator(self) -> RunningCost:
        return RunningCost(self)


class RunningCost:
    """l(x, u) of the OCP's running cost (per second, before the knot's dt), for closed-loop
    cost accounting that is the same whatever horizon or terminal a controller used."""

    def __init__(self, ocp: ReachingOCP) -> None:
        # Its own target residuals: evaluating a logged run must not move the live OCP's target.
        self._residuals: list[crocoddyl.ResidualModelFrameTranslation] = []
        self._dam = ocp.differential(ocp.running_costs(ocp.spec.costs, self._residuals))
        self._data = self._dam.createData()

    def set_target(self, target: np.ndarray) -> None:
        for r in self._residuals:
            r.reference = np.asarray(target, dtype=float)

    def __call__(self, x: np.ndarray, u: np.ndarray) -> float:
        self._dam.calc(self._data, x, u)
        return float(self._data.cost)

    def integrate(self, xs: np.ndarray, us: np.ndarray, targets: np.ndarray, dt: float) -> float:
        """sum_k l(x_k, u_k) dt along an executed trajectory with per-step targets."""
        total, current = 0.0, None
        for k in range(len(xs)):
            if current is None or not np.array_equal(targets[k], current):
                current = targets[k]
                self.set_target(current)
            total += self(xs[k], us[k]) * dt
        return total
