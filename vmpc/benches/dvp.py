"""Data-generation throughput of DVP: OCP solves per second on each executor and worker count,
measured side by side on the same problems (iteration 0: zero terminal).

:func:`bench_throughput` measures, writes ``bench_dvp_<system>.json`` and returns a
:class:`ThroughputResult`; it prints nothing (the CLI formats the result).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import TypeAdapter

from learning.dvp.config import DVPConfig
from learning.dvp.executors import ExecutorError, ExecutorSpec, make_executor
from learning.dvp.systems import SystemSpec, make_system
from mpc.io import atomic_write_text

__all__ = [
    "ExecutorFailure",
    "ThroughputResult",
    "ThroughputRow",
    "bench_throughput",
    "measure_executors",
    "write_result",
]


@dataclass(frozen=True)
class ThroughputRow:
    """One executor and worker count: the timed solves and the speed-up over one worker of the
    same executor (None when one worker was not measured)."""

    executor: str
    workers: int
    solves: int
    ok: int
    wall_s: float
    solves_per_s: float
    speedup_vs_1: float | None


@dataclass(frozen=True)
class ExecutorFailure:
    """An executor that could not run (e.g. ray not installed)."""

    executor: str
    workers: int
    error: str


@dataclass(frozen=True)
class ThroughputResult:
    """What :func:`bench_throughput` measured; :meth:`to_dict` is the JSON object."""

    system: str
    samples: int
    horizon: int
    rows: list[ThroughputRow | ExecutorFailure]
    date: str
    json_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "samples": self.samples,
            "horizon": self.horizon,
            "rows": [asdict(r) for r in self.rows],
            "date": self.date,
        }


def measure_executors(
    settings: list[tuple[str, int]],
    open_executor: Callable[[ExecutorSpec], Any],
    solve: Callable[[Any, bool], list[bool]],
    chunk: int | None = None,
) -> list[ThroughputRow | ExecutorFailure]:
    """For each (executor kind, workers): open the executor, ``solve(ex, True)`` outside the
    timing (a warm-up: imports and problems built on every worker), then ``solve(ex, False)``
    timed, whose list says which solves succeeded. Rows carry the speed-up over one worker of
    the same executor; an executor that cannot run is an :class:`ExecutorFailure` row."""
    measured: list[ThroughputRow | ExecutorFailure] = []
    for kind, workers in settings:
        spec = ExecutorSpec(kind=cast(Literal["local", "ray"], kind), workers=workers, chunk=chunk)
        try:
            with open_executor(spec) as ex:
                solve(ex, True)
                t0 = time.perf_counter()
                oks = solve(ex, False)
                wall = time.perf_counter() - t0
        except ExecutorError as exc:
            measured.append(ExecutorFailure(kind, workers, str(exc)))
            continue
        n = len(oks)
        measured.append(ThroughputRow(kind, workers, n, sum(oks), wall, n / wall, None))
    base = {
        r.executor: r.solves_per_s
        for r in measured
        if isinstance(r, ThroughputRow) and r.workers == 1
    }
    return [
        replace(r, speedup_vs_1=r.solves_per_s / base[r.executor] if r.executor in base else None)
        if isinstance(r, ThroughputRow)
        else r
        for r in measured
    ]


def bench_throughput(
    cfg: DVPConfig, samples: int, settings: list[tuple[str, int]], out: Path
) -> ThroughputResult:
    """Solve the same ``samples`` problems on each (executor kind, workers) of ``settings``
    after a warm-up, write ``out/bench_dvp_<system>.json`` and return the result."""
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    problems = system.sample(samples, np.random.default_rng(cfg.seed))
    T = cfg.dvp.horizon

    def solve(ex: Any, warm_up: bool) -> list[bool]:
        rows = problems[: 8 * ex.workers] if warm_up else problems
        return [o.ok for o in ex.map(rows, T, None, T, cfg.dvp.maxiter)]

    rows = measure_executors(
        settings, lambda spec: make_executor(spec, spec_json), solve, cfg.executor.chunk
    )
    return write_result(system.name, samples, T, rows, out / f"bench_dvp_{system.name}.json")


def write_result(
    system: str, samples: int, horizon: int, rows: list[ThroughputRow | ExecutorFailure], path: Path
) -> ThroughputResult:
    result = ThroughputResult(
        system=system,
        samples=samples,
        horizon=horizon,
        rows=rows,
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=path,
    )
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
