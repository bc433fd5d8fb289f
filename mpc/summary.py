"""Run metrics: the ``summary.json`` contract that later tools and benchmarks read."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["settle_time", "recoveries", "solve_stats", "SUMMARY_KEYS"]

SUMMARY_KEYS = (
    "ee_error_final_m", "ee_error_max_m", "settle_time_s", "closed_loop_cost", "recoveries",
    "solve_ms", "iterations_mean", "deadline_misses", "solver_failures",
    "torque_saturation_steps", "real_time_factor", "sim_steps", "horizon", "dt", "terminal",
)


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


def recoveries(t: np.ndarray, err: np.ndarray, pushes: list[tuple[float, float]], tol: float
               ) -> list[dict[str, Any]]:
    """One entry per push (start, duration): peak error in its window (until the next push or
    the end) and the time from the push's start until the error is back within tol for good."""
    out = []
    starts = [p[0] for p in pushes]
    for i, (start, duration) in enumerate(pushes):
        end_window = starts[i + 1] if i + 1 < len(pushes) else np.inf
        w = (t >= start) & (t < end_window)
        entry: dict[str, Any] = {"start_s": start, "duration_s": duration}
        if not w.any():
            entry.update(peak_deviation_m=None, recovery_time_s=None)
        else:
            ew, tw = err[w], t[w]
            k = _stays_within_from(ew, tol)
            entry["peak_deviation_m"] = float(ew.max())
            entry["recovery_time_s"] = None if k is None else float(tw[k] - start)
        out.append(entry)
    return out


def solve_stats(solve_ms: np.ndarray) -> dict[str, float]:
    if solve_ms.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "mean": float(solve_ms.mean()),
        "p50": float(np.percentile(solve_ms, 50)),
        "p99": float(np.percentile(solve_ms, 99)),
        "max": float(solve_ms.max()),
    }
