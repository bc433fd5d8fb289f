"""``vmpc bench mpc``: our replan against raw Crocoddyl on the same problem, side by side.

For each horizon T the closed loop runs in the simulator; at every replan the controller's full
replan (warm start, solve, plan extraction, activation) and a raw ``solver.solve`` of a twin
problem from the same measured state are timed back to back, in alternating order so neither
gets the warmer cache. A second, plain closed-loop run gives the real-time factor.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mpc.config import load_config
from mpc.io import atomic_write_text
from mpc.loop import ClosedLoop
from mpc.ocp import ReachingOCP

__all__ = ["bench_mpc"]


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def _bench_horizon(config: str, T: int, replans: int, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(
        config,
        [
            *overrides,
            f"ocp.horizon={T}",
            "ocp.terminal.kind=quadratic",
            "mpc.maxiter=1",
            "disturbances.schedule=[]",
        ],
    )
    ours_ms, raw_ms, inner_ms = [], [], []
    with ClosedLoop(cfg) as loop:
        arm, ctrl, nq = loop.arm, loop.controller, loop.robot.nq
        x = np.zeros(2 * nq)
        arm.read_state(x[:nq], x[nq:])
        ctrl.start(x.copy())
        twin = ReachingOCP(
            loop.robot, cfg.ocp, loop.ocp.target, loop.ocp.terminal, x0=x, nthreads=cfg.mpc.nthreads
        )
        twin.solver.solve(list(ctrl.solver.xs), list(ctrl.solver.us), cfg.mpc.init_maxiter, False)
        tau = np.zeros(nq)
        every = cfg.mpc.replan_every
        for k in range(replans + 20):  # the first 20 replans warm the caches and are dropped
            t = k * every * arm.dt
            arm.read_state(x[:nq], x[nq:])
            xs, us = twin.solver.xs, twin.solver.us  # raw warm start: previous solution as is
            ours_first = k % 2 == 0
            for turn in (0, 1):
                if (turn == 0) == ours_first:
                    t0 = time.perf_counter()
                    ctrl.solve(x, t)
                    ctrl.activate()
                    ours = time.perf_counter() - t0
                else:
                    twin.problem.x0 = x
                    t0 = time.perf_counter()
                    twin.solver.solve(xs, us, 1, False)
                    raw = time.perf_counter() - t0
            if k >= 20:
                ours_ms.append(ours * 1e3)
                inner_ms.append(ctrl.last_report.solve_ms)
                raw_ms.append(raw * 1e3)
            for j in range(every):
                ctrl.control(x, t + j * arm.dt, tau)
                arm.step(tau)
                if j + 1 < every:
                    arm.read_state(x[:nq], x[nq:])
    rt_cfg = load_config(
        config,
        [
            *overrides,
            f"ocp.horizon={T}",
            "ocp.terminal.kind=quadratic",
            "run.duration=1.0",
            "disturbances.schedule=[]",
        ],
    )
    with ClosedLoop(rt_cfg) as loop:
        rtf = loop.run(progress=False).summary.real_time_factor
    row = {
        "horizon": T,
        "ours_ms_p50": _pct(ours_ms, 50),
        "ours_ms_p99": _pct(ours_ms, 99),
        "raw_ms_p50": _pct(raw_ms, 50),
        "raw_ms_p99": _pct(raw_ms, 99),
        "ours_solver_only_ms_p50": _pct(inner_ms, 50),
        "real_time_factor": rtf,
    }
    row["ratio_p50"] = row["ours_ms_p50"] / row["raw_ms_p50"]
    row["ratio_p99"] = row["ours_ms_p99"] / row["raw_ms_p99"]
    return row


def bench_mpc(
    config: str,
    horizons: list[int],
    replans: int,
    out: Path,
    overrides: list[str] | None = None,
    progress: bool = True,
    goal_ratio: float = 1.2,
) -> dict[str, Any]:
    from tqdm import tqdm

    rows = []
    for T in tqdm(horizons, desc="bench mpc", unit="horizon", disable=not progress, leave=False):
        rows.append(_bench_horizon(config, T, replans, overrides or []))
    cfg = load_config(config, overrides or [])
    header = (
        f"vmpc bench mpc: 1 warm-started FDDP iteration per replan, dt {cfg.ocp.dt} s, "
        f"nthreads {cfg.mpc.nthreads}, {replans} replans per T, replan every "
        f"{cfg.mpc.replan_every} sim step(s)"
    )
    print(header)
    print(
        f"{'T':>5} {'ours p50':>10} {'raw p50':>10} {'ratio':>7} {'ours p99':>10} "
        f"{'raw p99':>10} {'ratio':>7} {'RTF':>7}"
    )
    for r in rows:
        print(
            f"{r['horizon']:>5} {r['ours_ms_p50']:>8.3f}ms {r['raw_ms_p50']:>8.3f}ms "
            f"{r['ratio_p50']:>6.2f}x {r['ours_ms_p99']:>8.3f}ms {r['raw_ms_p99']:>8.3f}ms "
            f"{r['ratio_p99']:>6.2f}x {r['real_time_factor']:>6.2f}x"
        )
    worst = max(r["ratio_p50"] for r in rows)
    verdict = "meets" if worst <= goal_ratio else "MISSES"
    print(f"worst p50 ratio {worst:.2f}x: {verdict} the goal of <= {goal_ratio}x of raw Crocoddyl")
    result = {
        "config": config,
        "dt": cfg.ocp.dt,
        "nthreads": cfg.mpc.nthreads,
        "replans": replans,
        "goal_ratio": goal_ratio,
        "worst_ratio_p50": worst,
        "rows": rows,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "machine": platform.machine(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out / "bench_mpc.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'bench_mpc.json'}")
    return result
