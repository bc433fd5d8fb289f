"""Data-generation throughput of DVP: OCP solves per second on each executor and worker count,
measured side by side on the same problems (iteration 0: zero terminal)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from learning.dvp.config import DVPConfig
from learning.dvp.executors import ExecutorError, ExecutorSpec, make_executor
from learning.dvp.systems import SystemSpec, make_system
from mpc.io import atomic_write_text

__all__ = ["bench_throughput"]


def bench_throughput(
    cfg: DVPConfig, samples: int, settings: list[tuple[str, int]], out: Path
) -> dict[str, Any]:
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    rows = system.sample(samples, np.random.default_rng(cfg.seed))
    T = cfg.dvp.horizon
    results = []
    for kind, workers in settings:
        spec = ExecutorSpec(kind=kind, workers=workers, chunk=cfg.executor.chunk)
        try:
            with make_executor(spec, spec_json) as ex:
                # Start-up (imports, building the problems) on every worker, outside the timing.
                ex.map(rows[: 8 * workers], T, None, T, cfg.dvp.maxiter)
                t0 = time.perf_counter()
                outs = ex.map(rows, T, None, T, cfg.dvp.maxiter)
                wall = time.perf_counter() - t0
        except ExecutorError as exc:
            results.append({"executor": kind, "workers": workers, "error": str(exc)})
            continue
        results.append(
            {
                "executor": kind,
                "workers": workers,
                "solves": len(outs),
                "ok": sum(o.ok for o in outs),
                "wall_s": wall,
                "solves_per_s": len(outs) / wall,
            }
        )
    base = {
        r["executor"]: r["solves_per_s"]
        for r in results
        if r.get("workers") == 1 and "solves_per_s" in r
    }
    print(f"vmpc bench dvp: {system.name}, {samples} OCPs of horizon {T}, zero terminal")
    print(f"{'executor':>9} {'workers':>8} {'OCP/s':>9} {'speed-up':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['executor']:>9} {r['workers']:>8}  {r['error']}")
            continue
        r["speedup_vs_1"] = (
            r["solves_per_s"] / base[r["executor"]] if r["executor"] in base else None
        )
        sp = f"{r['speedup_vs_1']:.2f}x" if r["speedup_vs_1"] else "-"
        print(f"{r['executor']:>9} {r['workers']:>8} {r['solves_per_s']:>9.1f} {sp:>9}")
    result = {
        "system": system.name,
        "samples": samples,
        "horizon": T,
        "rows": results,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out / f"bench_dvp_{system.name}.json", json.dumps(result, indent=2) + "\n")
    return result
