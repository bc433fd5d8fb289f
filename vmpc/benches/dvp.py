"""Data-generation throughput of DVP: OCP solves per second on each executor and worker count,
measured side by side on the same problems (iteration 0: zero terminal).

:func:`bench_throughput` measures, writes ``bench_dvp_<system>.json`` and returns a
:class:`ThroughputResult`; it prints nothing (the CLI formats the result).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import TypeAdapter

from learning.dvp.config import DVPConfig
from learning.dvp.executors import ExecutorError, ExecutorSpec, make_executor
from learning.dvp.systems import SystemSpec, make_system
from mpc.io import atomic_write_text

__all__ = ["ExecutorFailure", "ThroughputResult", "ThroughputRow", "bench_throughput"]


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


def bench_throughput(
    cfg: DVPConfig, samples: int, settings: list[tuple[str, int]], out: Path
) -> ThroughputResult:
    """Solve the same ``samples`` problems on each (executor kind, workers) of ``settings``
    after a warm-up, write ``out/bench_dvp_<system>.json`` and return the result."""
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    problems = system.sample(samples, np.random.default_rng(cfg.seed))
    T = cfg.dvp.horizon
    measured: list[ThroughputRow | ExecutorFailure] = []
    for kind, workers in settings:
        spec = ExecutorSpec(
            kind=cast(Literal["local", "ray"], kind), workers=workers, chunk=cfg.executor.chunk
        )
        try:
            with make_executor(spec, spec_json) as ex:
                # Start-up (imports, building the problems) on every worker, outside the timing.
                ex.map(problems[: 8 * workers], T, None, T, cfg.dvp.maxiter)
                t0 = time.perf_counter()
                outs = ex.map(problems, T, None, T, cfg.dvp.maxiter)
                wall = time.perf_counter() - t0
        except ExecutorError as exc:
            measured.append(ExecutorFailure(kind, workers, str(exc)))
            continue
        n_ok = sum(o.ok for o in outs)
        measured.append(ThroughputRow(kind, workers, len(outs), n_ok, wall, len(outs) / wall, None))
    base = {
        r.executor: r.solves_per_s
        for r in measured
        if isinstance(r, ThroughputRow) and r.workers == 1
    }
    rows = [
        replace(r, speedup_vs_1=r.solves_per_s / base[r.executor] if r.executor in base else None)
        if isinstance(r, ThroughputRow)
        else r
        for r in measured
    ]
    result = ThroughputResult(
        system=system.name,
        samples=samples,
        horizon=T,
        rows=rows,
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=out / f"bench_dvp_{system.name}.json",
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
