"""The :class:`System` base: one system's problems, built once per horizon and solved into value
samples (with the long-horizon continuation that makes ground truths reliable).

The systems (:mod:`.toys`, :mod:`.arm`):

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

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import crocoddyl
import numpy as np

from mpc.errors import VmpcError
from mpc.value.artifact import StateLayout

__all__ = ["SolveOutcome", "System", "TerminalFactory"]

# Builds the terminal knot's action model of one problem (called when the terminal id changes).
TerminalFactory = Callable[[], Any]


@dataclass
class SolveOutcome:
    ok: bool
    reason: str  # why a solve was rejected ("" when ok)
    z: np.ndarray  # (K, n_in) recorded inputs [x_k, theta]
    value: np.ndarray  # (K,) cost-to-go from x_k
    grad_x: np.ndarray  # (K, nx) solver's Vx at node k
    iterations: int


class System(ABC):
    """One system's problems. Instances live in worker processes and keep their problems."""

    name: str
    nx: int
    nu: int
    dt: float
    task_params: list[str] = []
    _state: crocoddyl.StateAbstract

    def __init__(self) -> None:
        self._problems: dict[int, tuple[Any, Any]] = {}
        self._terminal_id: dict[int, str] = {}
        self._terminals: dict[int, Any] = {}

    # -- what a system defines --------------------------------------------------------------------
    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n problems as rows [x0, theta]."""

    @abstractmethod
    def _build(self, horizon: int, terminal: crocoddyl.ActionModelAbstract) -> tuple[Any, Any]:
        """(problem, solver) with ``horizon`` running knots."""

    def _set_task(self, problem_key: int, theta: np.ndarray) -> None:  # noqa: B027 - optional
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

    # -- what goes into a value artifact ----------------------------------------------------------
    @abstractmethod
    def state_layout(self) -> StateLayout:
        """How a value of this system reads its state vector."""

    def fingerprint(self, spec_json: str) -> str:
        """What defines the cost-to-go: by default the system's config section itself."""
        return "sha256:" + hashlib.sha256(spec_json.encode()).hexdigest()

    def check_ready(self) -> None:  # noqa: B027 - optional hook
        """Raise a one-line error if DVP cannot converge on this system as configured."""

    # Axis labels of a 2-D value map (the first two state coordinates), or None for no map.
    value_map_axes: tuple[str, str] | None = None

    # -- task-space input features (mpc/value/features.py) -------------------------------------
    feature_robot: Any = None  # the RobotModel features are computed on; None: no features
    goal_target: np.ndarray | None = None  # [m] the fixed EE target of an unconditioned task

    def lift(self, features: list[str], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs [x, theta] -> ([x, theta, phi(x)], dphi/dx) with the shared feature map."""
        raise VmpcError(f"network.features: the {self.name} system has no task-space features")

    # -- shared machinery -------------------------------------------------------------------------
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

    def solve(
        self,
        row: np.ndarray,
        horizon: int,
        terminal_id: str,
        make_terminal,
        record_nodes: int,
        maxiter: int,
        continuation: int | None = None,
    ) -> SolveOutcome:
        """Solve one problem into value samples. With ``continuation`` (a shorter horizon), a
        long problem is also started from the short problem's solution held at its last state,
        and the cheaper converged solution wins: from a constant initial guess, long horizons
        (the ground truth) can converge to wasteful local optima, e.g. a cartpole that swings
        its pole round in the middle of the horizon."""
        x0 = row[: self.nx]
        guesses = [([x0.copy() for _ in range(horizon + 1)], self.init_controls(x0, horizon))]
        if continuation is not None and continuation < horizon:
            short = self._solve_once(row, continuation, terminal_id, make_terminal, maxiter)
            if short is not None:
                xs, us = short
                pad = horizon - continuation
                guesses.append(
                    (xs + [xs[-1]] * pad, us + self.init_controls(xs[-1], horizon)[:pad])
                )
        best: SolveOutcome | None = None
        best_cost = np.inf
        for guess in guesses:
            out, cost = self._solve_record(
                row, horizon, terminal_id, make_terminal, record_nodes, maxiter, guess
            )
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

    def _solve_record(
        self,
        row: np.ndarray,
        horizon: int,
        terminal_id: str,
        make_terminal,
        record_nodes: int,
        maxiter: int,
        guess,
    ) -> tuple[SolveOutcome, float]:
        x0, theta = row[: self.nx], row[self.nx :]
        problem, solver = self.problem(horizon, terminal_id, make_terminal)
        self._set_task(horizon, theta)
        evaluator = getattr(self._terminals[horizon], "evaluator", None)
        if evaluator is not None and len(theta):  # a value conditioned on the task
            evaluator.set_params(theta)
        problem.x0 = x0
        if guess is None:
            guess = ([x0.copy() for _ in range(horizon + 1)], self.init_controls(x0, horizon))
        xs, us = guess
        empty = SolveOutcome(
            False, "", np.zeros((0, len(row))), np.zeros(0), np.zeros((0, self.nx)), 0
        )
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
