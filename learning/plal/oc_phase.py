"""The OC phase of PDDP and PLAL: solve every sampled OCP (in parallel on the shared executors),
each from its own initial guess and with its own multipliers.

A worker builds its family once and keeps one problem per (horizon, constrained): one
:class:`~.consensus.ConsensusActionModel` per knot (PLAL's multipliers are per knot), BoxFDDP with
the control box (``constrained``) or FDDP without it (the paper's -C ablation). What a solve needs
travels in an :class:`OCJob`; what comes back is an :class:`OCResult` per problem, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import crocoddyl
import numpy as np
from pydantic import TypeAdapter

from mpc.policy.evaluator import PolicyEvaluator
from mpc.policy.warm_start import STATE_BOUND

from ..executors import Executor
from .consensus import ConsensusActionModel
from .systems import OCPFamily, PolicySystemSpec, make_family

__all__ = [
    "OCJob",
    "OCResult",
    "OCWorker",
    "Policy",
    "Rollouts",
    "build_worker",
    "rollout",
    "run_job",
    "sane_states",
    "solve_task",
    "worker_context",
]

if TYPE_CHECKING:
    from .config import PLALConfig

_SPEC: TypeAdapter[Any] = TypeAdapter(PolicySystemSpec)


@dataclass
class OCJob:
    """Everything the OC phase of one iteration needs (arrays indexed by problem)."""

    horizon: int
    maxiter: int
    constrained: bool
    mode: Literal["none", "policy", "reference"]
    mu: float
    rows: np.ndarray  # (N, nx + n_task) [x0, theta]
    guess_xs: np.ndarray  # (N, T+1, nx)
    guess_us: np.ndarray  # (N, T, nu)
    lam: np.ndarray | None = None  # (N, T, nu) lambda_t
    x_ref: np.ndarray | None = None  # (N, T, nx) 2x_t (reference mode)
    u_ref: np.ndarray | None = None  # (N, T, nu) pi(2x_t) (reference mode)
    policy: tuple[dict[str, np.ndarray], str] | None = None  # (weights, activation)
    th_stop: float | None = None  # the solver's stopping tolerance (None: Crocoddyl's default)


@dataclass
class OCResult:
    ok: bool
    reason: str
    xs: np.ndarray  # (T+1, nx)
    us: np.ndarray  # (T, nu)
    gains: np.ndarray  # (T, nu, nx) DDP feedback: du = -K dx
    iterations: int
    cost: float  # the task's cost R(beta; u), without the consensus term
    converged: bool
    calls: int  # dynamics evaluations during the solve


class OCWorker:
    """A worker's context: the family and its problems, built once."""

    def __init__(self, family: OCPFamily) -> None:
        self.family = family
        self._problems: dict[tuple[int, bool], tuple[Any, Any, list[ConsensusActionModel]]] = {}
        self._th_stop = 1e-9  # Crocoddyl's default stopping tolerance

    def problem(self, horizon: int, constrained: bool):
        key = (horizon, constrained)
        if key not in self._problems:
            knots = [ConsensusActionModel(self.family.running_model()) for _ in range(horizon)]
            problem = crocoddyl.ShootingProblem(
                np.zeros(self.family.nx), knots, self.family.terminal_model()
            )
            if problem.nthreads != 1:
                problem.nthreads = 1
            solver = (
                crocoddyl.SolverBoxFDDP(problem) if constrained else crocoddyl.SolverFDDP(problem)
            )
            self._problems[key] = (problem, solver, knots)
        return self._problems[key]

    def solve(self, job: OCJob, i: int, policy: PolicyEvaluator | None) -> OCResult:
        nx = self.family.nx
        problem, solver, knots = self.problem(job.horizon, job.constrained)
        row = job.rows[i]
        theta = row[nx:]
        for t, k in enumerate(knots):
            k.mu = job.mu if job.mode != "none" else 0.0
            k.mode = "reference" if job.mode == "reference" else "policy"
            k.policy, k.theta = policy, theta
            k.calls = 0
            if job.lam is not None:
                k.lam = job.lam[i, t]
            if job.mode == "reference":
                assert job.x_ref is not None and job.u_ref is not None
                k.x_ref, k.u_ref = job.x_ref[i, t], job.u_ref[i, t]
        self.family.set_task(theta)
        problem.x0 = row[:nx].copy()
        guess_xs, guess_us = job.guess_xs[i], job.guess_us[i]
        if not sane_states(guess_xs):  # e.g. a poor policy's rollout of a falling arm
            out = OCResult(False, "guess left the state box", *self._empty(job.horizon))
        else:
            out = self._solve_from(solver, problem, knots, job, row, guess_xs, guess_us)
        if not out.ok:
            # A poor policy's rollout can leave every sensible state (Le Lidec et al. skip the
            # UR5's first evaluations for that reason): try again from the still guess.
            still_us = np.tile(self.family.init_controls(row[:nx]), (job.horizon, 1))
            still_xs = np.tile(row[:nx], (job.horizon + 1, 1))
            again = self._solve_from(solver, problem, knots, job, row, still_xs, still_us)
            again.calls += out.calls
            return again
        return out

    def _task_gains(self, solver, knots, job: OCJob) -> np.ndarray | None:
        """The feedback gains of the task alone at the solution: one backward pass with the
        consensus term off. The solve's own gains are those of the augmented problem, which
        the term pulls towards the current policy's Jacobian (with mu of the order of the
        control Hessian, halfway), so the Sobolev target would mostly teach pi its own
        derivative. None if the pass fails (the augmented gains are used then)."""
        nu, nx = self.family.nu, self.family.nx
        saved = [k.mu for k in knots]
        try:
            for k in knots:
                k.mu = 0.0
            solver.calcDiff()
            solver.backwardPass()
            return np.array([np.asarray(solver.K[t]).reshape(nu, nx) for t in range(job.horizon)])
        except Exception:  # Crocoddyl throws when the pass needs more regularisation
            return None
        finally:
            for k, mu in zip(knots, saved, strict=True):
                k.mu = mu

    def _empty(self, T: int) -> tuple[Any, ...]:
        nx, nu = self.family.nx, self.family.nu
        return (
            np.zeros((T + 1, nx)), np.zeros((T, nu)), np.zeros((T, nu, nx)), 0,
            float("inf"), False, 0,
        )  # fmt: skip

    def _solve_from(self, solver, problem, knots, job: OCJob, row, guess_xs, guess_us) -> OCResult:
        nx, nu, T = self.family.nx, self.family.nu, job.horizon
        xs0 = [x for x in guess_xs]
        xs0[0] = row[:nx].copy()
        us0 = [u for u in guess_us]
        for k in knots:
            k.calls = 0
        solver.th_stop = job.th_stop if job.th_stop is not None else self._th_stop
        empty = OCResult(False, "", *self._empty(T))
        try:
            converged = bool(solver.solve(xs0, us0, job.maxiter, False))
        except Exception as exc:  # Crocoddyl throws on numerically broken problems
            empty.reason, empty.calls = (
                f"exception: {type(exc).__name__}",
                sum(k.calls for k in knots),
            )
            return empty
        calls = sum(k.calls for k in knots)
        if not solver.isFeasible:  # FDDP keeps the guess's gaps until it closes them
            empty.reason, empty.calls = "gaps left (infeasible)", calls
            return empty
        xs, us = np.array(solver.xs), np.array(solver.us)
        gains = self._task_gains(solver, knots, job) if job.mode != "none" else None
        if gains is None:
            gains = np.array([np.asarray(solver.K[t]).reshape(nu, nx) for t in range(T)])
        problem.calc(list(xs), list(us))
        cost = sum(d.base.cost for d in problem.runningDatas) + problem.terminalData.cost
        finite = sane_states(xs) and np.isfinite(us).all() and np.isfinite(gains).all()
        if not (finite and np.isfinite(cost)):
            empty.reason, empty.calls = "non-finite", calls
            return empty
        return OCResult(True, "", xs, us, gains, int(solver.iter), float(cost), converged, calls)


def sane_states(xs: np.ndarray) -> bool:
    """Finite and within :data:`STATE_BOUND` (an exploded rollout stays finite for a while)."""
    return bool(np.isfinite(xs).all() and np.abs(xs).max() < STATE_BOUND)


def worker_context(cfg: PLALConfig) -> str:
    """The JSON a worker builds its family from (:func:`build_worker`)."""
    return json.dumps(
        {
            "system": cfg.system.model_dump(mode="json"),
            "terminal_weight": cfg.problems.terminal_weight,
        }
    )


def build_worker(context_json: str) -> OCWorker:
    """A worker's context from :func:`worker_context`'s JSON."""
    raw = json.loads(context_json)
    spec = _SPEC.validate_python(raw["system"])
    return OCWorker(make_family(spec, float(raw["terminal_weight"])))


def solve_task(worker: OCWorker, idx: np.ndarray, job: OCJob) -> list[OCResult]:
    """The shared executors' task: solve the problems whose indices are the rows of ``idx``
    (a column; the problems themselves travel once, in ``job``)."""
    policy = None if job.policy is None else PolicyEvaluator(job.policy[0], job.policy[1])
    return [worker.solve(job, int(i), policy) for i in idx[:, 0]]


def run_job(
    ex: Executor, job: OCJob, on_done: Callable[[int], None] | None = None
) -> list[OCResult]:
    """Every problem of ``job`` on ``ex``, results in problem order."""
    idx = np.arange(len(job.rows), dtype=float)[:, None]
    return ex.run(solve_task, idx, (job,), on_done)


class Policy(Protocol):
    """Anything with ``action(z) -> u`` (the numpy evaluator; an RL baseline's wrapper)."""

    def action(self, z: np.ndarray) -> np.ndarray: ...


def rollout(
    models: list[Any],
    datas: list[Any],
    terminal: tuple[Any, Any],
    policy: Policy,
    x0: np.ndarray,
    theta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The policy in closed loop on the model: (xs, us, task cost J(beta; pi)), eq. (3)."""
    T = len(models)
    xs = np.zeros((T + 1, len(x0)))
    us = np.zeros((T, models[0].nu))
    xs[0] = x0
    cost = 0.0
    for t in range(T):
        z = np.concatenate([xs[t], theta]) if len(theta) else xs[t]
        us[t] = policy.action(z)
        models[t].calc(datas[t], xs[t], us[t])
        cost += datas[t].cost
        xs[t + 1] = datas[t].xnext
    terminal[0].calc(terminal[1], xs[T])
    return xs, us, float(cost + terminal[1].cost)


class Rollouts:
    """Closed-loop rollouts on the family's plain models (the task cost only), built once."""

    def __init__(self, family: OCPFamily, horizon: int) -> None:
        self.models = [family.running_model() for _ in range(horizon)]
        self.datas = [m.createData() for m in self.models]
        term = family.terminal_model()
        self.terminal = (term, term.createData())
        self.nx, self.family = family.nx, family

    def run(self, policy: Policy, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs (N, T+1, nx), us (N, T, nu), costs (N,)) from each row [x0, theta]."""
        xs, us, costs = [], [], []
        for row in rows:
            self.family.set_task(row[self.nx :])
            x, u, c = rollout(
                self.models, self.datas, self.terminal, policy, row[: self.nx], row[self.nx :]
            )
            xs.append(x)
            us.append(u)
            costs.append(c)
        return np.array(xs), np.array(us), np.array(costs)
