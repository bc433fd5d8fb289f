"""From runs to comparisons: per-run cost ratios and one :class:`Aggregate` per controller and
variant.

Cost ratios are taken per episode against the reference controller's run of the same episode and
variant, then averaged; spreads are the 10th and 90th percentiles over runs; runs that never
settled or recovered are counted, not averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .running import RunRow
from .settings import VARIANTS

__all__ = ["Aggregate", "add_cost_ratios", "aggregate"]


@dataclass
class Aggregate:
    """One controller in one variant, over its runs (a row of horizons.csv)."""

    runs: int
    cost_mean: float | None
    cost_median: float | None
    cost_ratio_mean: float | None
    cost_ratio_median: float | None
    cost_ratio_p10: float | None
    cost_ratio_p90: float | None
    ee_error_final_mean_m: float | None
    ee_error_final_median_m: float | None
    settle_time_mean_s: float | None
    never_settled: int
    recovery_time_mean_s: float | None  # None without a push
    never_recovered: int | None  # None without a push
    solve_ms_mean: float | None
    solve_ms_p50_mean: float | None
    solve_ms_p50_median: float | None  # median over runs of each run's median solve time
    solve_ms_p50_p10: float | None
    solve_ms_p50_p90: float | None
    solve_ms_p99_max: float | None
    speedup_vs_reference: float | None  # reference solve p50 / this one
    deadline_misses: int
    replans: int
    solver_failures: int


def _finite(xs: Sequence[float | None]) -> np.ndarray:
    a = np.array([x for x in xs if x is not None], dtype=float)
    return a[np.isfinite(a)]


def _stat(xs: Sequence[float | None], fn: str, q: float = 50.0) -> float | None:
    a = _finite(xs)
    if a.size == 0:
        return None
    if fn == "mean":
        return float(a.mean())
    if fn == "max":
        return float(a.max())
    return float(np.percentile(a, q))


def add_cost_ratios(rows: Sequence[RunRow], reference: str | None) -> None:
    """Set each row's ``cost_ratio``: its cost over the reference's cost on the same episode and
    variant (None without a reference run or with a zero reference cost)."""
    ref_cost = {
        (r.episode, r.variant): r.closed_loop_cost for r in rows if r.controller == reference
    }
    for r in rows:
        rc = ref_cost.get((r.episode, r.variant))
        r.cost_ratio = r.closed_loop_cost / rc if rc else None


def aggregate(
    rows: Sequence[RunRow], controllers: Sequence[str], reference: str | None
) -> dict[str, dict[str, Aggregate]]:
    """Per variant ('no_push', 'push') and controller, in the order of ``controllers``."""
    out: dict[str, dict[str, Aggregate]] = {}
    for variant in VARIANTS:
        vrows = [r for r in rows if r.variant == variant]
        if not vrows:
            continue
        ref_cost = {r.episode: r.closed_loop_cost for r in vrows if r.controller == reference}
        per: dict[str, Aggregate] = {}
        for label in controllers:
            rs = [r for r in vrows if r.controller == label]
            if not rs:
                continue
            ratios: list[float | None] = [
                r.closed_loop_cost / ref_cost[r.episode]
                for r in rs
                if ref_cost.get(r.episode) and r.closed_loop_cost is not None
            ]
            cost: list[float | None] = [r.closed_loop_cost for r in rs]
            p50: list[float | None] = [r.solve_ms_p50 for r in rs]
            settle = [r.settle_time_s for r in rs]
            final = [r.ee_error_final_m for r in rs]
            a = Aggregate(
                runs=len(rs),
                cost_mean=_stat(cost, "mean"),
                cost_median=_stat(cost, "pct", 50),
                cost_ratio_mean=_stat(ratios, "mean"),
                cost_ratio_median=_stat(ratios, "pct", 50),
                cost_ratio_p10=_stat(ratios, "pct", 10),
                cost_ratio_p90=_stat(ratios, "pct", 90),
                ee_error_final_mean_m=_stat(final, "mean"),
                ee_error_final_median_m=_stat(final, "pct", 50),
                settle_time_mean_s=_stat(settle, "mean"),
                never_settled=sum(s is None for s in settle),
                recovery_time_mean_s=None,
                never_recovered=None,
                solve_ms_mean=_stat([r.solve_ms_mean for r in rs], "mean"),
                solve_ms_p50_mean=_stat(p50, "mean"),
                solve_ms_p50_median=_stat(p50, "pct", 50),
                solve_ms_p50_p10=_stat(p50, "pct", 10),
                solve_ms_p50_p90=_stat(p50, "pct", 90),
                solve_ms_p99_max=_stat([r.solve_ms_p99 for r in rs], "max"),
                speedup_vs_reference=None,
                deadline_misses=sum(int(r.deadline_misses) for r in rs),
                replans=sum(int(r.replans) for r in rs),
                solver_failures=sum(int(r.solver_failures) for r in rs),
            )
            if variant == "push":
                rec = [r.recovery_time_s for r in rs]
                a.recovery_time_mean_s = _stat(rec, "mean")
                a.never_recovered = sum(x is None for x in rec)
            per[label] = a
        ref = per.get(reference or "")
        if ref is not None and ref.solve_ms_p50_mean:
            for a in per.values():
                if a.solve_ms_p50_mean:
                    a.speedup_vs_reference = ref.solve_ms_p50_mean / a.solve_ms_p50_mean
        out[variant] = per
    return out
