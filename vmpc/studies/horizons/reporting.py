"""The study's outputs: the printed table, ``horizons.json``, ``horizons.csv``, ``runs.csv`` and
``horizons.png``. Nothing here prints; the CLI prints :func:`format_table`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpc.io import atomic_write_text, save_figure

from .results import StudyResult

__all__ = ["RUN_COLUMNS", "format_table", "plot_horizons", "variant_title", "write_outputs"]

RUN_COLUMNS = (
    "run",
    "episode",
    "variant",
    "controller",
    "horizon",
    "terminal",
    "closed_loop_cost",
    "cost_ratio",
    "ee_error_final_m",
    "ee_error_max_m",
    "settle_time_s",
    "recovery_time_s",
    "peak_deviation_m",
    "solve_ms_mean",
    "solve_ms_p50",
    "solve_ms_p99",
    "solve_ms_max",
    "replans",
    "deadline_misses",
    "solver_failures",
    "warm_start_resets",
    "fallback_entries",
    "torque_saturation_steps",
    "wall_s",
)


def _f(x: Any, fmt: str, scale: float = 1.0, none: str = "-") -> str:
    if x is None:
        return none
    return format(x if scale == 1.0 else x * scale, fmt)


def variant_title(variant: str, result: StudyResult, its: bool = False) -> str:
    """The title of a variant: without push, or with [its] push (F N for D s at T s)."""
    if variant == "no_push":
        return "without push"
    p = result.settings.push
    return (
        f"with {'its ' if its else ''}push ({p.force_n:g} N for {p.duration_s:g} s "
        f"at {p.start_s:g} s)"
    )


def format_table(result: StudyResult) -> str:
    """The printed summary: one block per variant, one line per controller."""
    s = result.settings
    ref = result.reference
    lines = [
        f"vmpc eval horizons: {len(result.episodes)} held-out episodes x "
        f"{len(s.variants)} variant(s) x {len(result.controllers)} controllers "
        f"= {len(result.runs)} runs",
        f"  value {result.value.path} ({result.value.model_id}), "
        f"{'target-conditioned' if result.value.target_conditioned else 'fixed target'}",
        *(
            f"  value {i + 2} (*-learned{i + 2}) {v.path} ({v.model_id}, {v.algorithm})"
            for i, v in enumerate(result.more_values)
        ),
        f"  dt {s.dt} s, replan every {s.replan_every} sim steps "
        f"({s.replan_period_ms:g} ms, lockstep), {s.duration_s:g} s per run, "
        f"seed {result.seed}, {s.workers} worker(s)",
    ]
    head = (
        f"  {'controller':<16}{'cost mean':>10}{'/ref mean':>10}{'/ref med':>9}"
        f"{'final mm':>9}{'settle s':>9}{'(never)':>8}{'recov s':>8}{'(never)':>8}"
        f"{'solve p50':>11}{'speed-up':>9}{'misses':>8}{'fails':>6}"
    )
    for variant, per in result.aggregates.items():
        title = variant_title(variant, result)
        lines += ["", f"{title}; ratios against {ref or '(no reference)'}", head]
        for label, a in per.items():
            lines.append(
                f"  {label:<16}{_f(a.cost_mean, '.4g'):>10}"
                f"{_f(a.cost_ratio_mean, '.4f'):>10}{_f(a.cost_ratio_median, '.4f'):>9}"
                f"{_f(a.ee_error_final_mean_m, '.3f', 1e3):>9}"
                f"{_f(a.settle_time_mean_s, '.3f'):>9}{a.never_settled:>8}"
                f"{_f(a.recovery_time_mean_s, '.3f'):>8}"
                f"{_f(a.never_recovered, 'd'):>8}"
                f"{_f(a.solve_ms_p50_mean, '.3f'):>8} ms"
                f"{_f(a.speedup_vs_reference, '.2f'):>8}x"
                f"{a.deadline_misses:>8}{a.solver_failures:>6}"
            )
    lines += [
        "",
        "  cost: running cost integrated over the executed trajectory (same for all); "
        "/ref: per-episode ratio to the reference, averaged; solve p50: per-run median "
        "solve time per replan, averaged; speed-up: reference solve p50 / this one",
    ]
    return "\n".join(lines)


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def _aggregate_rows(result: StudyResult) -> list[dict[str, Any]]:
    return [
        {"variant": v, "controller": label, **asdict(a)}
        for v, per in result.aggregates.items()
        for label, a in per.items()
    ]


def plot_horizons(result: StudyResult, path: Path) -> Path:
    """Closed-loop cost relative to the reference against solve time per replan (log x): one
    marker per controller at the means, bars from the 10th to the 90th percentile over runs;
    one panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aggs = result.aggregates
    ref = result.reference
    fig, axes = plt.subplots(1, len(aggs), figsize=(5.5 * len(aggs), 4.5), squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(result.controllers)}
    for ax, (variant, per) in zip(axes[0], aggs.items(), strict=False):
        use_ratio = ref is not None and ref in per
        for label, a in per.items():
            x, y = a.solve_ms_p50_mean, a.cost_ratio_mean if use_ratio else a.cost_mean
            if x is None or y is None:
                continue
            c = colors[label]
            ax.plot([x], [y], "o", color=c, ms=8, label=label, zorder=3)
            if a.solve_ms_p50_p10 is not None:
                ax.plot([a.solve_ms_p50_p10, a.solve_ms_p50_p90], [y, y], "-", color=c, lw=1.5)
            if use_ratio and a.cost_ratio_p10 is not None:
                ax.plot([x, x], [a.cost_ratio_p10, a.cost_ratio_p90], "-", color=c, lw=1.5)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if use_ratio:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.axhline(1.02, color="tab:green", lw=0.8, ls=":", label="+2%")
        ax.set_xscale("log")
        ax.set_xlabel("solve time per replan, p50 [ms] (log)")
        ax.set_ylabel(f"closed-loop cost / {ref}" if use_ratio else "closed-loop cost")
        ax.set_title("without push" if variant == "no_push" else "with push")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{len(result.episodes)} held-out episodes; markers: means, bars: 10th-90th percentile",
        fontsize=9,
    )
    return save_figure(fig, path)


def write_outputs(result: StudyResult, out: Path, *, plot: bool = True) -> list[Path]:
    """Write horizons.json, horizons.csv, runs.csv (and horizons.png) to ``out``; returns the
    paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "horizons.json", out / "horizons.csv", out / "runs.csv"]
    atomic_write_text(paths[0], json.dumps(result.to_json_dict(), indent=2) + "\n")
    agg_rows = _aggregate_rows(result)
    atomic_write_text(paths[1], _csv(agg_rows, list(agg_rows[0])))
    atomic_write_text(paths[2], _csv([asdict(r) for r in result.runs], RUN_COLUMNS))
    if plot:
        paths.append(plot_horizons(result, out / "horizons.png"))
    return paths
