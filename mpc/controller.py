"""Receding-horizon controller: warm-started FDDP replans and a Riccati feedback law between them.

The per-tick path (``control``) and the per-replan path (``solve`` + ``activate``) write into
buffers allocated once here. A plan is (X, U, K, t0): states, controls and gains along the
horizon, valid from sim time t0 [s]. Between replans the law is

    u(t, x) = U[i] - K[i] (x - x_ref(t)),   i = floor((t - t0) / dt),

with x_ref interpolated linearly along X (Crocoddyl's sign convention for K).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .config import MpcSpec
from .ocp import ReachingOCP

__all__ = ["MPCController", "SolveStatus", "SolveReport", "ControllerCounters"]


class SolveStatus(IntEnum):
    OK = 0
    FAILED = 1  # non-finite or diverged: the previous plan's law keeps running
    RESET = 2  # failed, and the warm start was reset to a gravity-holding guess
    FALLBACK = 3  # failed persistently: gravity compensation with damping is in charge


@dataclass(slots=True)
class SolveReport:
    solve_ms: float
    iterations: int
    cost: float
    status: SolveStatus


@dataclass
class ControllerCounters:
    solves: int = 0
    solver_failures: int = 0
    warm_start_resets: int = 0
    fallback_entries: int = 0
    fallback_ticks: int = 0
    nonfinite_torques: int = 0
    torque_saturation_steps: int = 0


class MPCController:
    def __init__(
        self,
        ocp: ReachingOCP,
        spec: MpcSpec,
        torque_limits: np.ndarray,
        sim_dt: float,
        max_latency_s: float = 0.0,
    ) -> None:
        self.ocp, self.spec = ocp, spec
        self.solver, self.problem = ocp.solver, ocp.problem
        T, nx, nu = ocp.T, ocp.nx, ocp.nu
        self.T, self.nx, self.nu, self.dt = T, nx, nu, ocp.dt
        self.tau_limit = np.asarray(torque_limits, float)  # [N m]
        # Between two scheduled replans the law only reaches the first knots of a plan, so only
        # those are copied out of Crocoddyl (a few us instead of tens). After a failed replan
        # the law keeps running past them by holding the last copied knot until the fallback.
        reach_s = spec.replan_every * sim_dt + max_latency_s
        self.k_rows = r = min(T, max(1, int(np.ceil(reach_s / self.dt - 1e-9))))
        # Two flat buffers (active plan, candidate) so one isfinite() checks a whole plan.
        self._bufs = [np.zeros((r + 1) * nx + r * nu + r * nu * nx) for _ in range(2)]
        self._plans = [self._views(b) for b in self._bufs]
        self.X, self.U, self.K = self._plans[0]
        self._Xc, self._Uc, self._Kc = self._plans[1]
        self.t0 = 0.0  # [s] sim time at which the active plan starts
        self._tc = 0.0
        # Warm start: the last good solution, kept as Crocoddyl's own vectors (copied in C++).
        self._vec = type(self.solver.xs)
        self._reg_max = self.solver.reg_max
        self._warm_xs, self._warm_us = self.solver.xs, self.solver.us
        self._cand_xs, self._cand_us = self._warm_xs, self._warm_us
        # Per-tick scratch.
        self._xref, self._dx, self._fb = np.zeros(nx), np.zeros(nx), np.zeros(nu)
        self._damping = spec.failure.fallback_damping
        self.counters = ControllerCounters()
        self._consecutive_failures = 0
        self.in_fallback = False
        self._pending = False  # a successful candidate waits for activate()
        self.last_report = SolveReport(0.0, 0, float("nan"), SolveStatus.OK)

    def _views(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, nx, nu = self.k_rows, self.nx, self.nu
        a, b = (r + 1) * nx, (r + 1) * nx + r * nu
        return buf[:a].reshape(r + 1, nx), buf[a:b].reshape(r, nu), buf[b:].reshape(r, nu, nx)

    # -- planning ---------------------------------------------------------------------------------
    def start(self, x: np.ndarray, t: float = 0.0) -> SolveReport:
        """Cold solve to convergence from a gravity-holding guess, then activate it."""
        self._reset_warm_start(x)
        report = self._solve(x, t, self._warm_xs, self._warm_us, self.spec.init_maxiter)
        self.activate()
        return report

    def _reset_warm_start(self, x: np.ndarray) -> None:
        nq = self.ocp.robot.nq
        rest = x.copy()
        rest[nq:] = 0.0
        self._warm_xs = [x.copy()] + [rest] * self.T
        self._warm_us = [self.ocp.robot.gravity_torques(x[:nq])] * self.T
        self._warm_t0: float | None = None

    def _warm_start(self, t: float) -> tuple[object, object]:
        """The last good solution shifted to start at t, by whole knots. Replanning faster than
        half a knot (the default) reuses it as is: the FDDP iteration absorbs the sub-knot shift
        (interpolating instead cost ~40 us per replan and did not change the closed loop)."""
        xs, us = self._warm_xs, self._warm_us
        if self._warm_t0 is None:
            return xs, us
        m = int(round((t - self._warm_t0) / self.dt))
        if m <= 0:
            return xs, us
        T = self.T
        return (
            [xs[min(k + m, T)] for k in range(T + 1)],
            [us[min(k + m, T - 1)] for k in range(T)],
        )

    def solve(self, x: np.ndarray, t: float) -> SolveReport:
        """One replan from measured state x at sim time t. Call :meth:`activate` to use it."""
        xs, us = self._warm_start(t)
        return self._solve(x, t, xs, us, self.spec.maxiter)

    def _solve(self, x: np.ndarray, t: float, xs: object, us: object, maxiter: int) -> SolveReport:
        self.problem.x0 = x
        t_start = time.perf_counter()
        try:
            self.solver.solve(xs, us, maxiter, False)
            solved = True
        except Exception:  # Crocoddyl throws on a numerically broken problem
            solved = False
        solve_ms = (time.perf_counter() - t_start) * 1e3
        self.counters.solves += 1
        cost = float(self.solver.cost) if solved else float("nan")
        ok = (
            solved
            and math.isfinite(cost)
            and self.solver.preg < self._reg_max
            and self._read_solution()
        )
        self._tc = t
        if ok:
            self._consecutive_failures = 0
            self.in_fallback = False
            status = SolveStatus.OK
            self._pending = True
        else:
            status = self._on_failure(x)
            self._pending = False
        self.last_report = SolveReport(solve_ms, int(self.solver.iter), cost, status)
        return self.last_report

    def _read_solution(self) -> bool:
        """Copy the plan's first knots into the candidate buffers and keep the whole solution
        for the next warm start; False if anything is non-finite."""
        xs, us, gains = self.solver.xs, self.solver.us, self.solver.K
        for k in range(self.k_rows):
            self._Xc[k] = xs[k]
            self._Uc[k] = us[k]
            self._Kc[k] = gains[k]
        self._Xc[self.k_rows] = xs[self.k_rows]
        if not math.isfinite(np.add.reduce(self._bufs[1])):  # NaN and inf survive a sum
            return False
        self._cand_xs, self._cand_us = self._vec(xs), self._vec(us)
        return True

    def _on_failure(self, x: np.ndarray) -> SolveStatus:
        f = self.spec.failure
        self.counters.solver_failures += 1
        self._consecutive_failures += 1
        n = self._consecutive_failures
        status = SolveStatus.FAILED
        if n % f.reset_after == 0:
            self._reset_warm_start(x)
            self.counters.warm_start_resets += 1
            status = SolveStatus.RESET
        if n >= f.fallback_after:
            if not self.in_fallback:
                self.counters.fallback_entries += 1
            self.in_fallback = True
            status = SolveStatus.FALLBACK
        return status

    def activate(self) -> bool:
        """Make the last successful candidate the active plan (no-op after a failure)."""
        if not self._pending:
            return False
        self._bufs.reverse()
        self._plans.reverse()
        self.X, self.U, self.K = self._plans[0]
        self._Xc, self._Uc, self._Kc = self._plans[1]
        self._warm_xs, self._warm_us = self._cand_xs, self._cand_us
        self.t0 = self._warm_t0 = self._tc
        self._pending = False
        return True

    # -- per tick ---------------------------------------------------------------------------------
    def control(self, x: np.ndarray, t: float, tau_out: np.ndarray) -> bool:
        """Torque [N m] for measured state x at sim time t, into tau_out; True if saturated."""
        if self.in_fallback:
            self._gravity_damping(x, tau_out)
            self.counters.fallback_ticks += 1
        else:
            s = (t - self.t0) / self.dt
            i = min(int(s), self.k_rows - 1)  # beyond the copied knots the law holds the last
            a = min(s - i, 1.0)
            xi = self.X[i]
            np.subtract(self.X[i + 1], xi, out=self._xref)
            self._xref *= a
            self._xref += xi
            np.subtract(x, self._xref, out=self._dx)
            np.dot(self.K[i], self._dx, out=self._fb)
            np.subtract(self.U[i], self._fb, out=tau_out)
        if not np.isfinite(tau_out).all():
            self.counters.nonfinite_torques += 1
            self._gravity_damping(x, tau_out)
            if not np.isfinite(tau_out).all():
                tau_out[:] = 0.0
        saturated = bool((np.abs(tau_out) > self.tau_limit).any())
        if saturated:
            np.clip(tau_out, -self.tau_limit, self.tau_limit, out=tau_out)
            self.counters.torque_saturation_steps += 1
        return saturated

    def _gravity_damping(self, x: np.ndarray, tau_out: np.ndarray) -> None:
        nq = self.ocp.robot.nq
        tau_out[:] = self.ocp.robot.gravity_torques(x[:nq])
        tau_out -= self._damping * x[nq:]
