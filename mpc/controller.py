"""Receding-horizon controller: warm-started FDDP replans and a Riccati feedback law between them.

The per-tick path (``control``) and the per-replan path (``solve`` + ``activate``) write into
buffers allocated once here. A plan is (X, U, K, t0): states, controls and gains along the
horizon, valid from sim time t0 [s]. Between replans the law is

    u(t, x) = U[i] - K[i] (x - x_ref(t)),   i = floor((t - t0) / dt),

with x_ref interpolated linearly along X (Crocoddyl's sign convention for K).

Watchdogs (``mpc.watchdog``), checked on every tick:

* **Measured state.** A state that is non-finite, or outside the URDF position limits by more
  than ``q_margin`` or beyond ``v_scale`` times the velocity limits, is *bad*. The torque of the
  last good tick is held for ``state_hold_s``, then the **brake** takes over. Replans are skipped
  while the state is bad (the warm start is never fed a bad state). Recovery: the first good
  state ends the episode; after a hold the law resumes at once, after a brake it resumes only
  once a plan solved from a good state after the episode is active (and that first solve starts
  from a fresh gravity-holding warm start).
* **Plan age.** A plan older than ``max_plan_age_s`` or its horizon T*dt hands over to the brake
  until a fresh plan is active; the knots the law can reach up to that age are the ones copied,
  so the law never holds a stale knot. ``activate(t)`` drops a plan that would go live already
  too old (wallclock timing).
* **Joint limits.** Ticks whose (finite) measured state is outside the URDF position or velocity
  limits are counted.

The brake is tau = g(q) - D v: gravity compensation at the measured q (the last good q when the
measured one is bad) with damping toward rest (no damping term when v is bad).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pinocchio as pin

from .config import MpcSpec
from .ocp import ReachingOCP
from .policy.warm_start import PolicyWarmStart

__all__ = ["MPCController", "SolveStatus", "SolveReport", "ControllerCounters"]


class SolveStatus(IntEnum):
    OK = 0
    FAILED = 1  # non-finite or diverged: the previous plan's law keeps running
    RESET = 2  # failed, and the warm start was reset to a gravity-holding guess
    FALLBACK = 3  # failed persistently: gravity compensation with damping is in charge
    SKIPPED = 4  # the measured state was bad: no solve, the warm start is untouched


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
    solves_skipped: int = 0  # replans not run because the measured state was bad
    state_watchdog_entries: int = 0  # episodes of bad measured states
    state_watchdog_ticks: int = 0  # ticks with a bad measured state
    state_hold_ticks: int = 0  # ticks holding the last good torque
    state_brakes: int = 0  # bad-state episodes that reached the brake
    plan_age_brakes: int = 0  # entries into the brake because the active plan was too old
    brake_ticks: int = 0  # ticks commanding the brake (either watchdog)
    stale_plans_skipped: int = 0  # plans already too old when they would have gone live
    joint_limit_violation_ticks: int = 0  # ticks with a measured q or v beyond the URDF limits
    policy_warm_starts: int = 0  # solves started from the warm-start policy's rollout
    policy_warm_start_failures: int = 0  # rollouts not finite: gravity-holding guess instead


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
        wd = spec.watchdog
        # A plan is used up to this age [s], then the brake takes over.
        self.max_plan_age = min(T * self.dt, wd.max_plan_age_s)
        # The law only reaches the first knots of a plan (until the next replan goes live, or
        # until the plan is too old after failed replans), so only those are copied out of
        # Crocoddyl (a few us instead of tens).
        reach_s = max(spec.replan_every * sim_dt + max_latency_s, self.max_plan_age)
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
        self._warm_t0: float | None = None  # [s] when the warm start's first knot is
        self._cand_xs, self._cand_us = self._warm_xs, self._warm_us
        # Per-tick scratch.
        self._xref, self._dx, self._fb = np.zeros(nx), np.zeros(nx), np.zeros(nu)
        self._sim_dt = sim_dt
        self._damping_cfg = (spec.failure.fallback_damping, spec.watchdog.brake_damping)
        self.fallback_damping = np.zeros(ocp.robot.nq)  # [N m s/rad] per joint, see _set_damping
        self.brake_damping = np.zeros(ocp.robot.nq)
        self._set_damping(np.asarray(self.problem.x0)[: ocp.robot.nq])
        # Watchdog bounds on |x - centre|: "bad" (with margins) and "limit" (the URDF's).
        # Non-finite or absurd URDF limits are read as +-1e3 (rad, rad/s).
        robot = ocp.robot
        self._nq = nq = robot.nq
        big = 1e3
        lo = np.where(np.isfinite(robot.q_lower), robot.q_lower, -big).clip(-big, big)
        hi = np.where(np.isfinite(robot.q_upper), robot.q_upper, big).clip(-big, big)
        vl = np.where(np.isfinite(robot.v_limit), np.abs(robot.v_limit), big).clip(0.0, big)
        self._centre = np.concatenate([(lo + hi) / 2, np.zeros(nq)])
        self._h_limit = np.concatenate([(hi - lo) / 2, vl])
        self._h_bad = np.concatenate([(hi - lo) / 2 + wd.q_margin, vl * wd.v_scale])
        self._wtmp, self._wr = np.zeros(nx), np.zeros(nx)
        self._checked_t, self._checked_id = math.nan, 0  # the state _check_state last saw
        self._checked_q = self._checked_v = False
        self._wr_q, self._wr_v = self._wr[:nq], self._wr[nq:]
        self._hold_s = wd.state_hold_s
        self._pin_model, self._pin_data = robot.model, robot.model.createData()
        self._q_good, self._tau_good = np.zeros(nq), np.zeros(nq)
        self._vd = np.zeros(nq)
        self._bad_since = -1.0  # [s] start of the current bad-state episode; < 0: none
        self._bad_braked = False  # the current episode reached the brake
        self._fresh_after = -math.inf  # [s] after a brake, plans older than this are not used
        self._reset_warm = False  # the next solve starts from a fresh warm start
        self._age_braking = False
        self.counters = ControllerCounters()
        self._consecutive_failures = 0
        self.in_fallback = False
        self._pending = False  # a successful candidate waits for activate()
        self.last_report = SolveReport(0.0, 0, float("nan"), SolveStatus.OK)
        # A learned warm-start policy (mpc.warm_start.kind: policy): see set_warm_policy.
        self.warm_policy: PolicyWarmStart | None = None

    def _set_damping(self, q: np.ndarray) -> None:
        """Per-joint damping: the configured value, capped at 0.5 / (sim_dt (M^-1)_jj) so that a
        light distal joint is not driven unstable by damping at the sim rate (iiwa joint 7:
        I = 1e-3 kg m^2, 5 N m s/rad at 1 kHz is dt D / I = 5 > 2, a diverging oscillation)."""
        robot = self.ocp.robot
        m_inv = np.linalg.inv(robot.mass_matrix(np.asarray(q, float)))
        cap = 0.5 / (self._sim_dt * np.abs(np.diag(m_inv)))
        fallback, brake = self._damping_cfg
        self.fallback_damping[:] = np.minimum(fallback, cap)
        self.brake_damping[:] = np.minimum(brake, cap)

    def _views(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, nx, nu = self.k_rows, self.nx, self.nu
        a, b = (r + 1) * nx, (r + 1) * nx + r * nu
        return buf[:a].reshape(r + 1, nx), buf[a:b].reshape(r, nu), buf[b:].reshape(r, nu, nx)

    # -- planning ---------------------------------------------------------------------------------
    def start(self, x: np.ndarray, t: float = 0.0) -> SolveReport:
        """Cold solve to convergence from a gravity-holding guess, then activate it."""
        nq = self._nq
        self._q_good[:] = x[:nq]
        self._tau_good[:] = self.ocp.robot.gravity_torques(x[:nq])
        self._set_damping(x[:nq])
        self._reset_warm_start(x)
        report = self._solve(x, t, self._warm_xs, self._warm_us, self.spec.init_maxiter)
        self.activate()
        return report

    def set_warm_policy(self, policy: PolicyWarmStart | None) -> None:
        """Start from ``policy``'s rollout on the first solve, after a target change
        (:meth:`target_changed`) and on every warm-start reset; None: gravity-holding."""
        self.warm_policy = policy

    def target_changed(self) -> None:
        """The OCP's target moved: with a warm-start policy, the next solve starts from its
        rollout towards the new target instead of the shifted plan to the old one."""
        if self.warm_policy is not None:
            self._reset_warm = True

    def _reset_warm_start(self, x: np.ndarray) -> None:
        if self.warm_policy is not None:
            guess = self.warm_policy.guess(x)
            if guess is not None:
                self.counters.policy_warm_starts += 1
                self._warm_xs, self._warm_us = guess
                self._warm_t0 = None
                return
            self.counters.policy_warm_start_failures += 1
        nq = self.ocp.robot.nq
        rest = x.copy()
        rest[nq:] = 0.0
        self._warm_xs = [x.copy()] + [rest] * self.T
        self._warm_us = [self.ocp.robot.gravity_torques(x[:nq])] * self.T
        self._warm_t0 = None

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
        """One replan from measured state x at sim time t. Call :meth:`activate` to use it.
        A bad measured state (see the module doc) is not solved from: status SKIPPED."""
        q_ok, v_ok = self._check_state(x, t)
        if not (q_ok and v_ok):
            self.counters.solves_skipped += 1
            self._pending = False
            self.last_report = SolveReport(0.0, 0, float("nan"), SolveStatus.SKIPPED)
            return self.last_report
        if self._reset_warm:  # the first solve after a brake on bad states
            self._reset_warm = False
            self._reset_warm_start(x)
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

    def activate(self, t: float | None = None) -> bool:
        """Make the last successful candidate the active plan (no-op after a failure). With the
        sim time t it goes live at, a plan already older than the age limit is dropped."""
        if not self._pending:
            return False
        if t is not None and t - self._tc > self.max_plan_age + 1e-12:
            self._pending = False
            self.counters.stale_plans_skipped += 1
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
    def _check_state(self, x: np.ndarray, t: float) -> tuple[bool, bool]:
        """(q usable, v usable): finite and within the watchdog's bounds. Allocation-free; a
        replan tick's solve and control check the same state once (``_wtmp`` keeps
        |x - centre| for :meth:`control`)."""
        if t == self._checked_t and id(x) == self._checked_id:
            return self._checked_q, self._checked_v
        np.subtract(x, self._centre, out=self._wtmp)
        np.abs(self._wtmp, out=self._wtmp)
        np.subtract(self._wtmp, self._h_bad, out=self._wr)
        # NaN makes max() NaN and the comparison False; inf exceeds every bound.
        self._checked_q = bool(self._wr_q.max() <= 0.0)
        self._checked_v = bool(self._wr_v.max() <= 0.0)
        self._checked_t, self._checked_id = t, id(x)
        return self._checked_q, self._checked_v

    def control(self, x: np.ndarray, t: float, tau_out: np.ndarray) -> bool:
        """Torque [N m] for measured state x at sim time t, into tau_out; True if saturated."""
        c = self.counters
        q_ok, v_ok = self._check_state(x, t)
        if q_ok and v_ok:
            np.subtract(self._wtmp, self._h_limit, out=self._wr)
            if self._wr.max() > 0.0:
                c.joint_limit_violation_ticks += 1
            self._q_good[:] = x[: self._nq]
            if self._bad_since >= 0.0:  # a bad-state episode ends
                if self._bad_braked:
                    self._fresh_after = self._bad_since
                self._bad_since, self._bad_braked = -1.0, False
            if self.t0 < self._fresh_after:  # braked on bad states: wait for a fresh plan
                self._brake(x, True, True, tau_out)
                c.brake_ticks += 1
            elif self.in_fallback:
                self._gravity_damping(x, tau_out)
                c.fallback_ticks += 1
            elif t - self.t0 > self.max_plan_age + 1e-12:
                if not self._age_braking:
                    self._age_braking = True
                    c.plan_age_brakes += 1
                self._brake(x, True, True, tau_out)
                c.brake_ticks += 1
            else:
                self._age_braking = False
                self._law(x, t, tau_out)
        else:
            c.state_watchdog_ticks += 1
            if self._bad_since < 0.0:
                self._bad_since = t
                c.state_watchdog_entries += 1
            if t - self._bad_since < self._hold_s - 1e-12:
                tau_out[:] = self._tau_good
                c.state_hold_ticks += 1
            else:
                if not self._bad_braked:
                    self._bad_braked, self._reset_warm = True, True
                    c.state_brakes += 1
                self._brake(x, q_ok, v_ok, tau_out)
                c.brake_ticks += 1
        if not np.isfinite(tau_out).all():
            c.nonfinite_torques += 1
            self._brake(x, False, False, tau_out)  # gravity at the last good q
            if not np.isfinite(tau_out).all():
                tau_out[:] = 0.0
        saturated = bool((np.abs(tau_out) > self.tau_limit).any())
        if saturated:
            np.clip(tau_out, -self.tau_limit, self.tau_limit, out=tau_out)
            c.torque_saturation_steps += 1
        if q_ok and v_ok:
            self._tau_good[:] = tau_out
        return saturated

    def _law(self, x: np.ndarray, t: float, tau_out: np.ndarray) -> None:
        s = (t - self.t0) / self.dt
        i = min(int(s), self.k_rows - 1)  # the copied knots cover the plan's usable age
        a = min(s - i, 1.0)
        xi = self.X[i]
        np.subtract(self.X[i + 1], xi, out=self._xref)
        self._xref *= a
        self._xref += xi
        np.subtract(x, self._xref, out=self._dx)
        np.dot(self.K[i], self._dx, out=self._fb)
        np.subtract(self.U[i], self._fb, out=tau_out)

    def _brake(
        self,
        x: np.ndarray,
        q_ok: bool,
        v_ok: bool,
        tau_out: np.ndarray,
        damping: np.ndarray | None = None,
    ) -> None:
        """tau = g(q) - D v: q measured if usable, else the last good one; no damping on a bad v.
        D is the brake's damping unless ``damping`` is given."""
        nq = self._nq
        q = x[:nq] if q_ok else self._q_good
        tau_out[:] = pin.computeGeneralizedGravity(self._pin_model, self._pin_data, q)
        if v_ok:
            np.multiply(x[nq:], self.brake_damping if damping is None else damping, out=self._vd)
            tau_out -= self._vd

    def _gravity_damping(self, x: np.ndarray, tau_out: np.ndarray) -> None:
        """The fallback after persistent solver failures: the brake with its own damping."""
        self._brake(x, True, True, tau_out, self.fallback_damping)
