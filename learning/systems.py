"""Systems DVP learns values for. Each is a config section plus a small adapter that builds its
Crocoddyl problem once, samples problems, and solves one problem into value samples.

* ``pendulum``: swing-up of a torque-limited pendulum (Pinocchio model, C++ dynamics).
* ``cartpole``: balance upright with a force on the cart only (underactuated: the pole is free).
* ``unicycle``: Crocoddyl's ``ActionModelUnicycle``.
* ``arm``: the reaching OCP of :mod:`mpc` (same robot, same running cost as the MPC), with a fixed
  target or conditioned on the target.

For the first three the running cost is w_x ||x||^2 + w_u ||u||^2 (Parag et al., Sec. IV-A), which
vanishes at the goal, so the infinite-horizon value is finite. For the arm the posture term of
the state regularisation must be off (``ocp.costs.state_reg_q: 0``): at rest at the target the
EE, velocity and gravity-torque terms all vanish, a posture pull would not, and every DVP
iteration would add T times that residual cost (checked by :meth:`ArmSystem.check_goal_cost`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import crocoddyl
import numpy as np
import pinocchio as pin
from pydantic import BaseModel, ConfigDict, Field

from mpc.errors import VmpcError

__all__ = [
    "SolveOutcome",
    "System",
    "SystemSpec",
    "PendulumSpec",
    "CartpoleSpec",
    "UnicycleSpec",
    "ArmSpec",
    "make_system",
    "ZeroTerminal",
    "JointSubsetActuation",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PendulumSpec(_Spec):
    kind: Literal["pendulum"] = "pendulum"
    mass: float = Field(default=1.0, gt=0, description="[kg] point mass")
    length: float = Field(default=1.0, gt=0, description="[m]")
    torque_limit: float = Field(default=3.0, gt=0, description="[N m]")
    dt: float = Field(default=0.05, gt=0, description="[s]")
    w_x: tuple[float, float] = (1.0, 0.1)  # angle, velocity
    w_u: float = 0.001
    box: tuple[tuple[float, float], tuple[float, float]] = ((-3.1, 3.1), (-2.0, 2.0))


class CartpoleSpec(_Spec):
    kind: Literal["cartpole"] = "cartpole"
    cart_mass: float = Field(default=1.0, gt=0)
    pole_mass: float = Field(default=0.1, gt=0)
    pole_length: float = Field(default=0.5, gt=0, description="[m] pivot to pole mass")
    force_limit: float = Field(default=20.0, gt=0, description="[N]")
    dt: float = Field(default=0.02, gt=0)
    w_x: tuple[float, float, float, float] = (1.0, 1.0, 0.1, 0.1)  # x, theta, xdot, thetadot
    w_u: float = 0.01
    box: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (-0.4, 0.4), (-0.5, 0.5), (-0.5, 0.5))


class UnicycleSpec(_Spec):
    kind: Literal["unicycle"] = "unicycle"
    w_x: float = Field(default=10.0, gt=0, description="Crocoddyl's costWeights[0]")
    w_u: float = Field(default=1.0, gt=0, description="Crocoddyl's costWeights[1]")
    box: tuple[tuple[float, float], ...] = ((-1.5, 1.5), (-1.5, 1.5), (-1.5, 1.5))


class ArmSpec(_Spec):
    kind: Literal["arm"] = "arm"
    config: str = Field(description="the MPC config whose robot and running cost are learned")
    set: list[str] = Field(default_factory=list, description="overrides of that config")
    conditioned: bool = Field(default=False, description="input [x, target]: any target")
    q_spread: float = Field(default=0.5, gt=0, description="[rad] start box around q0")
    v_spread: float = Field(default=0.5, ge=0, description="[rad/s] start velocities")
    min_target_distance: float = Field(default=0.1, ge=0, description="[m] start EE to target")
    target_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = Field(
        default=None, description="[m] (min, max) of the targets a conditioned value is trained "
                                  "for (default: the config's task.workspace)")


SystemSpec = Annotated[PendulumSpec | CartpoleSpec | UnicycleSpec | ArmSpec,
                       Field(discriminator="kind")]


@dataclass
class SolveOutcome:
    ok: bool
    reason: str  # why a solve was rejected ("" when ok)
    z: np.ndarray  # (K, n_in) recorded inputs [x_k, theta]
    value: np.ndarray  # (K,) cost-to-go from x_k
    grad_x: np.ndarray  # (K, nx) solver's Vx at node k
    iterations: int


class ZeroTerminal(crocoddyl.ActionModelAbstract):
    """A terminal knot with no cost (DVP's iteration 0)."""

    def __init__(self, state: crocoddyl.StateAbstract, nu: int) -> None:
        crocoddyl.ActionModelAbstract.__init__(self, state, nu)

    def calc(self, data, x, u=None):  # noqa: ANN001
        data.cost = 0.0
        data.xnext[:] = x

    def calcDiff(self, data, x, u=None):  # noqa: ANN001,N802
        pass


class JointSubsetActuation(crocoddyl.ActuationModelAbstract):
    """tau = S u: the controls drive the listed velocity coordinates, the others are free
    (Crocoddyl's actuation models cover full and floating-base actuation, not this)."""

    def __init__(self, state: crocoddyl.StateMultibody, actuated: list[int]) -> None:
        crocoddyl.ActuationModelAbstract.__init__(self, state, len(actuated))
        self._idx = np.asarray(actuated, dtype=int)
        self._selection = np.zeros((state.nv, len(actuated)))  # [-] S
        self._selection[self._idx, np.arange(len(actuated))] = 1.0

    def calc(self, data, x, u=None):  # noqa: ANN001
        data.tau[:] = 0.0
        if u is not None:
            data.tau[self._idx] = u

    def calcDiff(self, data, x, u=None):  # noqa: ANN001,N802
        if u is not None:
            # eigenpy hands an (nv, 1) matrix over as a 1-D view: write through its own shape.
            data.dtau_du[:] = self._selection.reshape(data.dtau_du.shape)

    def commands(self, data, x, tau):  # noqa: ANN001
        data.u[:] = tau[self._idx]

    def torqueTransform(self, data, x, u):  # noqa: ANN001,N802
        data.Mtau[:] = self._selection.T.reshape(data.Mtau.shape)


class System(ABC):
    """One system's problems. Instances live in worker processes and keep their problems."""

    name: str
    nx: int
    nu: int
    dt: float
    task_params: list[str] = []

    def __init__(self) -> None:
        self._problems: dict[int, tuple[Any, Any]] = {}
        self._terminal_id: dict[int, str] = {}
        self._terminals: dict[int, Any] = {}

    # -- what a system defines ---------------------------------------------------------------------
    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n problems as rows [x0, theta]."""

    @abstractmethod
    def _build(self, horizon: int, terminal: crocoddyl.ActionModelAbstract) -> tuple[Any, Any]:
        """(problem, solver) with ``horizon`` running knots."""

    def _set_task(self, problem_key: int, theta: np.ndarray) -> None:
        """Apply task parameters (the arm's target) to the problem of that horizon."""

    def init_controls(self, x0: np.ndarray, horizon: int) -> list[np.ndarray]:
        return [np.zeros(self.nu)] * horizon

    def goal_state(self) -> np.ndarray | None:
        """A state where the value is known to be 0 (running cost 0 there, forever), or None.

        DVP needs it: V + c solves the same Bellman recursion for any constant c, so without
        an anchor the first fit's error at the goal is carried through every iteration."""
        return np.zeros(self.nx)

    def task_box(self) -> tuple[list[float], list[float]] | None:
        return None

    def goal_anchors(self, rows: np.ndarray, n: int) -> np.ndarray | None:
        """``n`` inputs z where V = 0 and dV/dx = 0, drawn without new randomness from this
        iteration's problem ``rows`` (so a resumed run draws the same), or None."""
        goal = self.goal_state()
        return None if goal is None else np.tile(goal, (n, 1))

    @property
    def state(self) -> crocoddyl.StateAbstract:
        return self._state

    # -- shared machinery --------------------------------------------------------------------------
    def problem(self, horizon: int, terminal_id: str, make_terminal) -> tuple[Any, Any]:
        """The problem of that horizon, built once; its terminal replaced when the id changes."""
        if horizon not in self._problems or self._terminal_id[horizon] != terminal_id:
            terminal = make_terminal()
            self._terminals[horizon] = terminal
            if horizon not in self._problems:
                self._problems[horizon] = self._build(horizon, terminal)
            else:
                self._problems[horizon][0].updateModel(horizon, terminal)
            self._terminal_id[horizon] = terminal_id
        return self._problems[horizon]

    def solve(self, row: np.ndarray, horizon: int, terminal_id: str, make_terminal,
              record_nodes: int, maxiter: int, continuation: int | None = None) -> SolveOutcome:
        """Solve one problem into value samples. With ``continuation`` (a shorter horizon), a
        long problem is also started from the short problem's solution held at its last state,
        and the cheaper converged solution wins: from a constant initial guess, long horizons
        (the ground truth) can converge to wasteful local optima, e.g. a cartpole that swings
        its pole round in the middle of the horizon."""
        x0, theta = row[: self.nx], row[self.nx:]
        guesses = [([x0.copy() for _ in range(horizon + 1)], self.init_controls(x0, horizon))]
        if continuation is not None and continuation < horizon:
            short = self._solve_once(row, continuation, terminal_id, make_terminal, maxiter)
            if short is not None:
                xs, us = short
                pad = horizon - continuation
                guesses.append((xs + [xs[-1]] * pad,
                                us + self.init_controls(xs[-1], horizon)[:pad]))
        best: SolveOutcome | None = None
        best_cost = np.inf
        for guess in guesses:
            out, cost = self._solve_record(row, horizon, terminal_id, make_terminal,
                                           record_nodes, maxiter, guess)
            if best is None or (out.ok and (not best.ok or cost < best_cost)):
                best, best_cost = out, cost
        assert best is not None
        return best

    def _solve_once(self, row, horizon, terminal_id, make_terminal, maxiter):
        """(xs, us) of a converged solve from the default guess, or None."""
        out, _ = self._solve_record(row, horizon, terminal_id, make_terminal, 1, maxiter, None)
        if not out.ok:
            return None
        _, solver = self._problems[horizon]
        return list(solver.xs), list(solver.us)

    def _solve_record(self, row: np.ndarray, horizon: int, terminal_id: str, make_terminal,
                      record_nodes: int, maxiter: int, guess) -> tuple[SolveOutcome, float]:
        x0, theta = row[: self.nx], row[self.nx:]
        problem, solver = self.problem(horizon, terminal_id, make_terminal)
        self._set_task(horizon, theta)
        evaluator = getattr(self._terminals[horizon], "evaluator", None)
        if evaluator is not None and len(theta):  # a value conditioned on the task
            evaluator.set_params(theta)
        problem.x0 = x0
        if guess is None:
            guess = ([x0.copy() for _ in range(horizon + 1)], self.init_controls(x0, horizon))
        xs, us = guess
        empty = SolveOutcome(False, "", np.zeros((0, len(row))), np.zeros(0),
                             np.zeros((0, self.nx)), 0)
        try:
            converged = solver.solve(xs, us, maxiter, False)
        except Exception as exc:  # Crocoddyl throws on numerically broken problems
            empty.reason = f"exception: {type(exc).__name__}"
            return empty, np.inf
        empty.iterations = int(solver.iter)
        xs, us = list(solver.xs), list(solver.us)
        total = problem.calc(xs, us)
        if not np.isfinite(total):
            empty.reason = "non-finite"
            return empty, np.inf
        if solver.preg >= solver.reg_max:
            empty.reason = "regularisation blew up"
            return empty, np.inf
        if not converged:
            empty.reason = "not converged"
            return empty, np.inf
        k = min(record_nodes, horizon)
        running = np.array([d.cost for d in problem.runningDatas])
        to_go = np.cumsum(np.append(running, problem.terminalData.cost)[::-1])[::-1][:k]
        grads = np.array([solver.Vx[i] for i in range(k)])
        states = np.array(xs[:k])
        if not (np.isfinite(grads).all() and np.isfinite(states).all()):
            empty.reason = "non-finite"
            return empty, np.inf
        z = np.hstack([states, np.tile(theta, (k, 1))]) if len(theta) else states
        return SolveOutcome(True, "", z, to_go, grads, int(solver.iter)), float(total)


def _box_sample(box, n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = np.array(box, float).T
    return rng.uniform(lo, hi, (n, len(lo)))


def _state_cost(state, nu: int, w: np.ndarray) -> crocoddyl.CostModelResidual:
    # WeightedQuad is 0.5 r^T W r: weights doubled so the cost reads sum w_i x_i^2.
    return crocoddyl.CostModelResidual(state, crocoddyl.ActivationModelWeightedQuad(2.0 * w),
                                       crocoddyl.ResidualModelState(state, np.zeros(state.nx), nu))


def _control_cost(state, nu: int, w: np.ndarray) -> crocoddyl.CostModelResidual:
    return crocoddyl.CostModelResidual(state, crocoddyl.ActivationModelWeightedQuad(2.0 * w),
                                       crocoddyl.ResidualModelControl(state, nu))


class _PinocchioToy(System):
    """Pendulum and cartpole: Pinocchio models with C++ free-forward dynamics."""

    def _setup(self, model: pin.Model, w_x, w_u: np.ndarray, u_lb, u_ub, dt: float,
               actuated: int | None = None) -> None:
        self._model = model
        self._state = crocoddyl.StateMultibody(model)
        self._actuation = (crocoddyl.ActuationModelFull(self._state) if actuated is None
                           else JointSubsetActuation(self._state, [actuated]))
        self.nx, self.nu, self.dt = self._state.nx, self._actuation.nu, dt
        self._w_x, self._w_u = np.asarray(w_x, float), np.asarray(w_u, float)
        self._u_lb, self._u_ub = np.asarray(u_lb, float), np.asarray(u_ub, float)

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        costs = crocoddyl.CostModelSum(self._state, self.nu)
        costs.addCost("x", _state_cost(self._state, self.nu, self._w_x), 1.0)
        costs.addCost("u", _control_cost(self._state, self.nu, self._w_u), 1.0)
        dam = crocoddyl.DifferentialActionModelFreeFwdDynamics(self._state, self._actuation, costs)
        run = crocoddyl.IntegratedActionModelEuler(dam, self.dt)
        run.u_lb, run.u_ub = self._u_lb, self._u_ub
        problem = crocoddyl.ShootingProblem(np.zeros(self.nx), [run] * horizon, terminal)
        if problem.nthreads != 1:
            problem.nthreads = 1
        return problem, crocoddyl.SolverBoxFDDP(problem)


class Pendulum(_PinocchioToy):
    name = "pendulum"

    def __init__(self, spec: PendulumSpec) -> None:
        super().__init__()
        model = pin.Model()
        jid = model.addJoint(0, pin.JointModelRY(), pin.SE3.Identity(), "hinge")
        # Mass above the hinge at angle 0: the goal x = 0 is the upright, unstable equilibrium.
        model.appendBodyToJoint(jid, pin.Inertia.FromSphere(spec.mass, 1e-3).se3Action(
            pin.SE3(np.eye(3), np.array([0.0, 0.0, spec.length]))), pin.SE3.Identity())
        model.lowerPositionLimit[:] = -10.0
        model.upperPositionLimit[:] = 10.0
        self._setup(model, spec.w_x, [spec.w_u], [-spec.torque_limit], [spec.torque_limit], spec.dt)
        self.box = spec.box

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)


class Cartpole(_PinocchioToy):
    name = "cartpole"

    def __init__(self, spec: CartpoleSpec) -> None:
        super().__init__()
        model = pin.Model()
        cart = model.addJoint(0, pin.JointModelPX(), pin.SE3.Identity(), "cart")
        model.appendBodyToJoint(cart, pin.Inertia.FromBox(spec.cart_mass, 0.2, 0.1, 0.1),
                                pin.SE3.Identity())
        pole = model.addJoint(cart, pin.JointModelRY(), pin.SE3.Identity(), "pole")
        model.appendBodyToJoint(pole, pin.Inertia.FromSphere(spec.pole_mass, 1e-3).se3Action(
            pin.SE3(np.eye(3), np.array([0.0, 0.0, spec.pole_length]))), pin.SE3.Identity())
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

    def __init__(self, spec: UnicycleSpec) -> None:
        super().__init__()
        self._spec = spec
        self._state = crocoddyl.StateVector(3)
        self.nx, self.nu, self.dt = 3, 2, 0.1
        self.box = spec.box

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        run = crocoddyl.ActionModelUnicycle()
        run.costWeights = np.array([self._spec.w_x, self._spec.w_u])
        problem = crocoddyl.ShootingProblem(np.zeros(3), [run] * horizon, terminal)
        if problem.nthreads != 1:
            problem.nthreads = 1
        return problem, crocoddyl.SolverFDDP(problem)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _box_sample(self.box, n, rng)


class ArmSystem(System):
    name = "arm"

    def __init__(self, spec: ArmSpec) -> None:
        super().__init__()
        from mpc.config import load_config
        from mpc.runner import build_robot

        self.spec = spec
        self.cfg = load_config(spec.config, spec.set)
        _, self.robot = build_robot(self.cfg)
        self.nx, self.nu, self.dt = 2 * self.robot.nq, self.robot.nq, self.cfg.ocp.dt
        from mpc.value_model import TARGET_PARAMS

        self.task_params = list(TARGET_PARAMS) if spec.conditioned else []
        q0, nq = np.asarray(self.cfg.robot.q0), self.robot.nq
        self.q_lo, self.q_hi = q0 - spec.q_spread, q0 + spec.q_spread
        if (self.q_lo < self.robot.q_lower).any() or (self.q_hi > self.robot.q_upper).any():
            bad = [self.robot.joint_names[i] for i in range(nq)
                   if self.q_lo[i] < self.robot.q_lower[i] or self.q_hi[i] > self.robot.q_upper[i]]
            raise VmpcError(f"system.q_spread: the sampling box q0 +- {spec.q_spread} rad leaves "
                            f"the joint limits of {', '.join(bad)}")
        ws = self.cfg.task.workspace
        box = spec.target_box or (ws.min, ws.max)
        self.target_lo, self.target_hi = (np.asarray(b, float) for b in box)
        if (self.target_lo > self.target_hi).any():
            raise VmpcError("system.target_box: min must be <= max on every axis")
        if (self.target_lo < ws.min).any() or (self.target_hi > ws.max).any():
            raise VmpcError(f"system.target_box: {[list(b) for b in box]} leaves the config's "
                            f"task.workspace {[list(ws.min), list(ws.max)]}")
        self._ocps: dict[int, Any] = {}

    def task_box(self) -> tuple[list[float], list[float]] | None:
        """(min, max) of the targets trained on, for a conditioned value's metadata."""
        return (self.target_lo.tolist(), self.target_hi.tolist()) if self.spec.conditioned else None

    @property
    def state(self) -> crocoddyl.StateAbstract:
        return self._any_ocp().state

    def _any_ocp(self):
        if not self._ocps:
            self.problem(1, "none", lambda: None)
        return next(iter(self._ocps.values()))

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        from mpc.ocp import NoTerminal, ReachingOCP, TerminalCost

        class _Given(TerminalCost):
            label = "dvp"

            def make_model(self, ocp):  # noqa: ANN001
                return terminal

        spec = self.cfg.ocp.model_copy(update={"horizon": horizon})
        ocp = ReachingOCP(self.robot, spec, np.asarray(self.cfg.task.target),
                          NoTerminal() if terminal is None else _Given())
        self._ocps[horizon] = ocp
        return ocp.problem, ocp.solver

    def _set_task(self, problem_key: int, theta: np.ndarray) -> None:
        if len(theta):
            self._ocps[problem_key].set_target(theta)

    def init_controls(self, x0: np.ndarray, horizon: int) -> list[np.ndarray]:
        return [self.robot.gravity_torques(x0[: self.robot.nq])] * horizon

    def goal_state(self) -> np.ndarray | None:
        return None  # a whole IK manifold (redundant arm), not one known state

    def goal_anchors(self, rows: np.ndarray, n: int) -> np.ndarray | None:
        """At rest with the EE on the target the running cost is 0 forever (module doc), so
        V = 0 and, V >= 0 being at its minimum, dV/dx = 0: anchors on that manifold, one IK
        solution from each problem's start configuration (towards its own target when
        conditioned), repeated to ``n``. They pin the constant that DVP leaves free (see
        :meth:`System.goal_state`); they do not make V precise to the 1e-4 a short horizon
        needs to settle within a millimetre (10 ms task: still ~3e-3 at the goal)."""
        nq = self.robot.nq
        target = np.asarray(self.cfg.task.target, float)
        found = []
        for row in rows[:n]:
            goal = row[2 * nq:] if self.spec.conditioned else target
            q = self.robot.ik_position(goal, row[:nq])
            if q is not None:
                found.append(np.concatenate([q, np.zeros(nq), row[2 * nq:]]))
        if not found:
            return None
        return np.array([found[i % len(found)] for i in range(n)])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        nq = self.robot.nq
        origin, radius = self.robot.reach()
        rows = []
        while len(rows) < n:
            q = rng.uniform(self.q_lo, self.q_hi)
            v = rng.uniform(-self.spec.v_spread, self.spec.v_spread, nq)
            row = [q, v]
            if self.spec.conditioned:
                target = rng.uniform(self.target_lo, self.target_hi)
                far = np.linalg.norm(self.robot.ee_position_world(q) - target)
                if np.linalg.norm(target - origin) > 0.9 * radius or far < self.spec.min_target_distance:
                    continue
                row.append(target)
            rows.append(np.concatenate(row))
        return np.array(rows)

    def check_goal_cost(self, tol: float = 1e-6) -> float:
        """Running cost at rest at the target after a long reach: must vanish (module doc)."""
        x0 = np.concatenate([self.cfg.robot.q0, np.zeros(self.robot.nq)])
        problem, solver = self.problem(200, "none", lambda: ZeroTerminal(self.state, self.nu))
        problem.x0 = x0
        solver.solve([x0] * 201, self.init_controls(x0, 200), 300, False)
        return float(problem.runningDatas[-1].cost / self.dt)


def make_system(spec: Any) -> System:
    kinds = {"pendulum": Pendulum, "cartpole": Cartpole, "unicycle": Unicycle, "arm": ArmSystem}
    return kinds[spec.kind](spec)
