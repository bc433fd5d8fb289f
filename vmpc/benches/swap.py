"""``vmpc bench swap``: does a model swap stall the loop? The longest gap between two control
ticks in wallclock timing, in the same run with and without a swap every ``period_s``.

Both runs use the same config, the same duration and real-time pacing (1 kHz by default), and
both start once the swap worker is ready (the swap process is spawned and idle in the run
without swaps too); the swapped run alternates between the value model and the quadratic
terminal ``swaps`` times. A tick hook records the wall time of every tick, so a load that held
the GIL shows up as one long gap. The comparison is over the same windows of both runs: from
each swap request to ``window_s`` of sim time after it went live, the whole time the swap was
being worked on. The loop's own hiccups (a slow solve, the machine's other tenants) happen with
or without swaps; the longest gap over the whole run and the median over windows of each
window's longest gap show how much of a difference is noise. Goal: the longest gap in the swap
windows is at most 1 ms above the same windows without swaps.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpc.config import load_config
from mpc.io import atomic_write_text
from mpc.loop import ClosedLoop
from mpc.loop.summary import RunSummary

__all__ = ["GOAL_EXTRA_GAP_MS", "SwapBenchResult", "SwapRun", "bench_swap"]

GOAL_EXTRA_GAP_MS = 1.0


@dataclass(frozen=True)
class SwapRun:
    swaps_requested: int
    swaps_accepted: int
    max_gap_ms: float  # longest wall time between two ticks inside the swap windows
    median_window_max_gap_ms: float  # median over the windows of each one's longest gap
    max_gap_run_ms: float  # the same over the whole run
    p999_gap_ms: float
    p50_gap_ms: float
    deadline_misses: int
    refusals: list[str]  # reasons of refused swaps


@dataclass(frozen=True)
class SwapBenchResult:
    config: str
    value: str
    period_s: float
    worker: str  # where swaps were loaded and validated: process or thread
    without: SwapRun
    with_swaps: SwapRun
    json_path: Path

    @property
    def extra_gap_ms(self) -> float:
        return self.with_swaps.max_gap_ms - self.without.max_gap_ms

    @property
    def meets_goal(self) -> bool:
        return self.extra_gap_ms <= GOAL_EXTRA_GAP_MS


def _run(
    config: str, overrides: list[str], schedule: list[tuple[float, str]]
) -> tuple[np.ndarray, np.ndarray, RunSummary, str]:
    """One wallclock run: sim time [s] and the gap before it [ms] of every tick, the summary,
    and where swaps were prepared (process or thread)."""
    swaps = ", ".join(f"{{t: {t:.6f}, terminal: {json.dumps(p)}}}" for t, p in schedule)
    cfg = load_config(config, [*overrides, "mpc.timing=wallclock", f"value.swaps=[{swaps}]"])
    stamps: list[tuple[float, float]] = []  # (sim time [s], wall time [s]) of every tick
    with ClosedLoop(cfg) as loop:
        worker = "thread" if loop.swap_process is None else "process"
        loop.warm_swaps(wait=True)
        loop.tick_hooks.append(lambda _loop, _k, t: stamps.append((t, time.perf_counter())))
        summary = loop.run(progress=False).summary
    a = np.asarray(stamps)
    return a[1:, 0], np.diff(a[:, 1]) * 1e3, summary, worker


def _measure(
    sim_t: np.ndarray,
    gaps: np.ndarray,
    summary: RunSummary,
    windows: list[tuple[float, float]],
    requested: int,
) -> SwapRun:
    per_window = [gaps[(sim_t >= a) & (sim_t < b)].max(initial=0.0) for a, b in windows]
    return SwapRun(
        swaps_requested=requested,
        swaps_accepted=sum(e["accepted"] for e in summary.swaps),
        max_gap_ms=float(max(per_window)),
        median_window_max_gap_ms=float(np.median(per_window)),
        max_gap_run_ms=float(gaps.max()),
        p999_gap_ms=float(np.percentile(gaps, 99.9)),
        p50_gap_ms=float(np.percentile(gaps, 50)),
        deadline_misses=summary.deadline_misses,
        refusals=[e["reason"] for e in summary.swaps if not e["accepted"]],
    )


def bench_swap(
    config: str,
    value: str,
    out: Path,
    *,
    swaps: int = 20,
    period_s: float = 0.25,
    window_s: float = 0.05,
    overrides: list[str] | None = None,
) -> SwapBenchResult:
    """Two wallclock runs of ``(swaps + 2) * period_s`` s: with ``swaps`` alternating swaps to
    ``value`` and back to the quadratic terminal, then without; writes bench_swap.json."""
    sets = [
        *(overrides or []),
        "ocp.terminal.kind=quadratic",
        "disturbances.schedule=[]",
        f"run.duration={(swaps + 2) * period_s}",
    ]
    schedule = [(period_s * (i + 1), value if i % 2 == 0 else "quadratic") for i in range(swaps)]
    sim_t, gaps, summary, worker = _run(config, sets, schedule)
    windows = [
        (e["t"], (e["applied_t"] if e["applied_t"] is not None else e["t"]) + window_s)
        for e in summary.swaps
    ]
    with_swaps = _measure(sim_t, gaps, summary, windows, len(schedule))
    sim_t, gaps, summary, _ = _run(config, sets, [])
    without = _measure(sim_t, gaps, summary, windows, 0)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_swap.json"
    result = SwapBenchResult(config, value, period_s, worker, without, with_swaps, path)
    record = {
        "config": config,
        "value": value,
        "period_s": period_s,
        "worker": worker,
        "without": asdict(without),
        "with_swaps": asdict(with_swaps),
        "extra_gap_ms": result.extra_gap_ms,
        "goal_extra_gap_ms": GOAL_EXTRA_GAP_MS,
        "meets_goal": result.meets_goal,
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return result
