"""Run metrics and the ``summary.json`` contract that later tools and benchmarks read.

:class:`RunSummary` is that contract as a dataclass: :meth:`RunSummary.to_dict` gives exactly the
JSON object (same keys, same order) that ``summary.json`` has always held; docs/outputs.md lists
the keys with their units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .run_log import RunLog

__all__ = [
    "SUMMARY_KEYS",
    "Recovery",
    "RunResult",
    "RunSummary",
    "SolveStats",
    "recoveries",
    "settle_time",
    "solve_stats",
]

SUMMARY_KEYS = (
    "ee_error_final_m",
    "ee_error_max_m",
    "settle_time_s",
    "closed_loop_cost",
    "recoveries",
    "solve_ms",
    "iterations_mean",
    "deadline_misses",
    "solver_failures",
    "torque_saturation_steps",
    "solves_skipped",
    "state_watchdog_entries",
    "state_watchdog_ticks",
    "state_hold_ticks",
    "state_brakes",
    "plan_age_brakes",
    "brake_ticks",
    "stale_plans_skipped",
    "joint_limit_violation_ticks",
    "terminal_reverts",
    "real_time_factor",
    "sim_steps",
    "horizon",
    "dt",
    "terminal",
)


@dataclass(frozen=True)
class SolveStats:
    """Solve time per replan [ms]."""

    mean: float
    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class Recovery:
    """One push: its start and duration [s], the peak EE error in its window [m] and the time
    from its start until the error is back within tolerance for good [s] (None: never)."""

    start_s: float
    duration_s: float
    peak_deviation_m: float | None
    recovery_time_s: float | None


@dataclass
class RunSummary:
    """Headline figures of one closed-loop run (``summary.json``)."""

    ee_error_final_m: float | None  # [m]
    ee_error_max_m: float | None  # [m]
    settle_time_s: float | None  # [s] None: never settled before the first push
    closed_loop_cost: float  # running cost integrated over the executed trajectory
    recoveries: list[Recovery]
    solve_ms: SolveStats
    iterations_mean: float | None
    deadline_misses: int
    solver_failures: int
    warm_start_resets: int
    fallback_entries: int
    fallback_ticks: int
    nonfinite_torques: int
    torque_saturation_steps: int
    # Watchdogs (mpc/controller.py): counts of ticks, episodes and replans.
    solves_skipped: int  # replans not run: the measured state was bad
    state_watchdog_entries: int  # episodes of bad measured states
    state_watchdog_ticks: int  # ticks with a bad measured state
    state_hold_ticks: int  # ticks holding the last good torque
    state_brakes: int  # bad-state episodes that reached the brake
    plan_age_brakes: int  # brake entries: the active plan was too old
    brake_ticks: int  # ticks commanding the brake
    stale_plans_skipped: int  # plans too old when they would have gone live (wallclock)
    joint_limit_violation_ticks: int  # ticks with measured q or v beyond the URDF limits
    terminal_reverts: int  # learned terminals swapped back after going non-finite at runtime
    real_time_factor: float
    interrupted: bool
    sim_steps: int
    replans: int
    horizon: int
    dt: float  # [s] knot spacing
    terminal: str
    swaps: list[dict[str, Any]]
    timing: str
    replan_every: int
    robot: str
    tolerance_m: float  # [m]
    bridge: dict[str, Any] | None = field(default=None)  # the bridge's counters, when it ran
    warm_start: str = "shift"  # mpc.warm_start: "shift", or "policy <id>"
    policy_warm_starts: int = 0  # solves started from the policy's rollout
    policy_warm_start_failures: int = 0  # rollouts not finite: gravity-holding guess instead

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` object; ``bridge`` only when a bridge ran."""
        out = asdict(self)
        if out["bridge"] is None:
            del out["bridge"]
        return out


@dataclass
class RunResult:
    """What :meth:`mpc.loop.ClosedLoop.run` returns."""

    log: RunLog
    summary: RunSummary
    pushes: np.ndarray  # rows: start, duration, link, fx, fy, fz, tx, ty, tz
    wall_s: float


def _stays_within_from(err: np.ndarray, tol: float) -> int | None:
    """First index after which err stays <= tol to the end of the window, or None."""
    above = np.flatnonzero(err > tol)
    if above.size == 0:
        return 0
    last = int(above[-1]) + 1
    return last if last < err.size else None


def settle_time(t: np.ndarray, err: np.ndarray, tol: float, until: float | None) -> float | None:
    """Time [s] after which the EE error stays within tol, up to the first disturbance."""
    window = t < until if until is not None else np.ones_like(t, dtype=bool)
    if not window.any():  # a push at t = 0: nothing to settle before it
        return None
    k = _stays_within_from(err[window], tol)
    return None if k is None else float(t[window][k])


def recoveries(
    t: np.ndarray, err: np.ndarray, pushes: list[tuple[float, float]], tol: float
) -> list[Recovery]:
    """One entry per push (start, duration): peak error in its window (until the next push or
    the end) and the time from the push's start until the error is back within tol for good."""
    out = []
    starts = [p[0] for p in pushes]
    for i, (start, duration) in enumerate(pushes):
        end_window = starts[i + 1] if i + 1 < len(pushes) else np.inf
        w = (t >= start) & (t < end_window)
        if not w.any():
            out.append(Recovery(start, duration, None, None))
            continue
        ew, tw = err[w], t[w]
        k = _stays_within_from(ew, tol)
        out.append(
            Recovery(start, duration, float(ew.max()), None if k is None else float(tw[k] - start))
        )
    return out


def solve_stats(solve_ms: np.ndarray) -> SolveStats:
    if solve_ms.size == 0:
        nan = float("nan")
        return SolveStats(nan, nan, nan, nan)
    return SolveStats(
        float(solve_ms.mean()),
        float(np.percentile(solve_ms, 50)),
        float(np.percentile(solve_ms, 99)),
        float(solve_ms.max()),
    )
