"""``vmpc eval compare``: a few controllers on the config's own run, side by side.

What ``make demo`` ends with: the 10 ms task at T=10 with the quadratic terminal, at T=10 with
the shipped value and at T=100 with the quadratic terminal, on the config's start, target and
push (the horizons study with ``episodes="config"``: one episode, so one run per controller and
variant). :func:`format_compare` is the table a newcomer reads: what the value buys in cost, and
what it saves in solve time against the long horizon.
"""

from __future__ import annotations

import textwrap

from .aggregation import Aggregate
from .reporting import variant_title
from .results import StudyResult
from .settings import parse_controllers

__all__ = ["COMPARE_CONTROLLERS", "COMPARE_REFERENCE", "format_compare"]

COMPARE_CONTROLLERS = ("T10-quadratic", "T10-learned", "T100-quadratic")
COMPARE_REFERENCE = "T100-quadratic"


def _f(x: float | None, fmt: str, unit: str = "", none: str = "never") -> str:
    return none if x is None else f"{format(x, fmt)}{unit}"


def _verdict(label: str, a: Aggregate, ref: str) -> str:
    """One sentence per controller: its cost, solve time and final error against the
    reference's."""
    if a.cost_ratio_median is None or a.speedup_vs_reference is None:
        return f"  {label}: no comparison (no reference run)"
    cost = (a.cost_ratio_median - 1.0) * 100
    speed = a.speedup_vs_reference
    solve = f"{speed:.1f}x less solve time" if speed >= 1 else f"{1 / speed:.1f}x more solve time"
    more = "more" if cost >= 0 else "less"
    final = a.ee_error_final_median_m
    end = "" if final is None else f", ends {final * 1e3:.1f} mm from the target"
    return f"  {label}: {abs(cost):.1f} % {more} cost than {ref}, {solve}{end}"


def format_compare(result: StudyResult) -> str:
    """The side-by-side table: per controller the closed-loop cost and its ratio to the
    reference, final EE error, settle and recovery times, median solve time per replan and its
    ratio to the reference's; then one sentence per controller."""
    s = result.settings
    ref = result.reference
    ep = result.episodes[0]
    lookahead = {c.label: f"{c.horizon * s.dt:g} s" for c in parse_controllers(result.controllers)}
    lines = [
        f"vmpc eval compare: {result.config}, its own start and target "
        f"({ep.start_distance_m * 100:.0f} cm apart), {s.duration_s:g} s",
        f"  dt {s.dt:g} s per knot, replan every {s.replan_every} sim steps "
        f"({s.replan_period_ms:g} ms, lockstep), value {result.value.path} "
        f"({result.value.model_id})",
    ]
    head = (
        f"  {'controller':<16}{'sees':>6}{'cost':>9}{'/ref':>8}{'final err':>11}"
        f"{'settle':>9}{'recovery':>10}{'solve p50':>12}{'/ref':>8}"
    )
    for variant, per in result.aggregates.items():
        title = variant_title(variant, result, its=True)
        lines += ["", f"{title}; /ref: ratio to {ref}", head]
        for label, a in per.items():
            solve_ratio = None if not a.speedup_vs_reference else 1.0 / a.speedup_vs_reference
            final = a.ee_error_final_median_m
            final_mm = None if final is None else final * 1e3
            no_recovery = "-" if variant == "no_push" else "never"
            lines.append(
                f"  {label:<16}{lookahead[label]:>6}{_f(a.cost_mean, '.4f', none='-'):>9}"
                f"{_f(a.cost_ratio_median, '.3f', none='-'):>8}"
                f"{_f(final_mm, '.2f', ' mm', '-'):>11}"
                f"{_f(a.settle_time_mean_s, '.3f', ' s'):>9}"
                f"{_f(a.recovery_time_mean_s, '.3f', ' s', no_recovery):>10}"
                f"{_f(a.solve_ms_p50_median, '.3f', ' ms', '-'):>12}"
                f"{_f(solve_ratio, '.3f', none='-'):>8}"
            )
        lines.append("")
        lines += [_verdict(label, a, ref) for label, a in per.items() if label != ref]
    note = (
        "cost: the running cost integrated over the executed trajectory (the same function for "
        "every controller); settle: time until the EE error stays within task.tolerance_m "
        "(before the push); recovery: from the push until it is back within tolerance; "
        "solve p50: median solve time per replan"
    )
    lines += ["", textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="  ")]
    return "\n".join(lines)
