"""``vmpc bench swap``: does a model swap stall the loop? The longest gap between two control
ticks in wallclock timing, in the same run with and without a swap every ``period_s``.

Both runs use the same config, the same duration and real-time pacing (1 kHz by default); the
swapped run alternates between the value model and the quadratic terminal ``swaps`` times. A
tick hook records the wall time of every tick, so a load that held the GIL shows up as one long
gap. The comparison is over the same windows of both runs: ``window_s`` of sim time from each
swap request (the loop's own hiccups, e.g. a slow solve, happen with or without swaps and are
reported over the whole run too). Goal: the longest gap in the swap windows is at most 1 ms
above the same windows without swaps.
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

__all__ = ["GOAL_EXTRA_GAP_MS", "SwapBenchResult", "SwapRun", "bench_swap"]

GOAL_EXTRA_GAP_MS = 1.0


@dataclass(frozen=True)
class SwapRun:
    swaps_requested: int
    swaps_accepted: int
    max_gap_ms: float  # longest wall time between two ticks inside the swap windows
    max_gap_run_ms: float  # the same over the whole run
    p999_gap_ms: float
    p50_gap_ms: float
    deadline_misses: int


@dataclass(frozen=True)
class SwapBenchResult:
    config: str
    value: str
    period_s: float
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
    config: str,
    overrides: list[str],
    schedule: list[tuple[float, str]],
    windows: list[float],
    window_s: float,
) -> SwapRun:
    swaps = ", ".join(f"{{t: {t:.6f}, terminal: {json.dumps(p)}}}" for t, p in schedule)
    cfg = load_config(config, [*overrides, "mpc.timing=wallclock", f"value.swaps=[{swaps}]"])
    stamps: list[tuple[float, float]] = []  # (sim time [s], wall time [s]) of every tick
    with ClosedLoop(cfg) as loop:
        loop.tick_hooks.append(lambda _loop, _k, t: stamps.append((t, time.perf_counter())))
        s = loop.run(progress=False).summary
    a = np.asarray(stamps)
    sim_t, gaps = a[1:, 0], np.diff(a[:, 1]) * 1e3
    in_window = np.zeros(len(gaps), dtype=bool)
    for t0 in windows:
        in_window |= (sim_t >= t0) & (sim_t < t0 + window_s)
    return SwapRun(
        swaps_requested=len(schedule),
        swaps_accepted=sum(e["accepted"] for e in s.swaps),
        max_gap_ms=float(gaps[in_window].max()),
        max_gap_run_ms=float(gaps.max()),
        p999_gap_ms=float(np.percentile(gaps, 99.9)),
        p50_gap_ms=float(np.percentile(gaps, 50)),
        deadline_misses=s.deadline_misses,
    )


def bench_swap(
    config: str,
    value: str,
    out: Path,
    *,
    swaps: int = 20,
    period_s: float = 0.25,
    window_s: float = 0.1,
    overrides: list[str] | None = None,
) -> SwapBenchResult:
    """Two wallclock runs of ``(swaps + 2) * period_s`` s: without swaps, then with ``swaps``
    alternating swaps to ``value`` and back to the quadratic terminal; writes bench_swap.json."""
    sets = [
        *(overrides or []),
        "ocp.terminal.kind=quadratic",
        "disturbances.schedule=[]",
        f"run.duration={(swaps + 2) * period_s}",
    ]
    schedule = [(period_s * (i + 1), value if i % 2 == 0 else "quadratic") for i in range(swaps)]
    windows = [t for t, _ in schedule]
    without = _run(config, sets, [], windows, window_s)
    with_swaps = _run(config, sets, schedule, windows, window_s)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_swap.json"
    result = SwapBenchResult(config, value, period_s, without, with_swaps, path)
    record = {
        "config": config,
        "value": value,
        "period_s": period_s,
        "without": asdict(without),
        "with_swaps": asdict(with_swaps),
        "extra_gap_ms": result.extra_gap_ms,
        "goal_extra_gap_ms": GOAL_EXTRA_GAP_MS,
        "meets_goal": result.meets_goal,
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return result
