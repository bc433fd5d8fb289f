"""``vmpc bench mpc``: our replan against raw Crocoddyl on the same problem, side by side.

For each horizon T the closed loop runs in the simulator; at every replan the controller's full
replan (warm start, solve, plan extraction, activation) and a raw ``solver.solve`` of a twin
problem from the same measured state are timed back to back, in alternating order so neither
gets the warmer cache. A second, plain closed-loop run gives the real-time factor.

:func:`bench_mpc` measures, writes ``bench_mpc.json`` and returns a :class:`MpcBenchResult`; it
prints nothing (the CLI formats the result).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpc.config import load_config
from mpc.io import atomic_write_text
from mpc.loop import ClosedLoop
from mpc.ocp import ReachingOCP
from mpc.progress import progress_bar

__all__ = ["Machine", "MpcBenchResult", "MpcBenchRow", "bench_mpc"]


@dataclass(frozen=True)
class Machine:
    """Where a benchmark ran."""

    python: str
    processor: str
    machine: str

    @classmethod
    def here(cls) -> Machine:
        return cls(platform.python_version(), platform.processor(), platform.machine())


@dataclass(frozen=True)
class MpcBenchRow:
    """One horizon: replan times [ms] of ours and of raw Crocoddyl, their ratios, and the
    real-time factor of a plain closed-loop run."""

    horizon: int
    ours_ms_p50: float
    ours_ms_p99: float
    raw_ms_p50: float
    raw_ms_p99: float
    ours_solver_only_ms_p50: float
    real_time_factor: float
    ratio_p50: float
    ratio_p99: float


@dataclass(frozen=True)
class MpcBenchResult:
    """What :func:`bench_mpc` measured; :meth:`to_dict` is the ``bench_mpc.json`` object."""

    config: str
    overrides: list[str]
    dt: float  # [s] knot spacing
    nthreads: int
    replans: int  # timed replans per horizon
    replan_every: int  # sim steps between replans
    goal_ratio: float
    worst_ratio_p50: float
    rows: list[MpcBenchRow]
    machine: Machine
    date: str
    json_path: Path

    @property
    def meets_goal(self) -> bool:
        """The worst median ratio is within the goal."""
        return self.worst_ratio_p50 <= self.goal_ratio

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "dt": self.dt,
            "nthreads": self.nthreads,
            "replans": self.replans,
            "goal_ratio": self.goal_ratio,
            "worst_ratio_p50": self.worst_ratio_p50,
            "rows": [asdict(r) for r in self.rows],
            "machine": asdict(self.machine),
            "date": self.date,
        }


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def _bench_horizon(config: str, T: int, replans: int, overrides: list[str]) -> MpcBenchRow:
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
    ours_ms: list[float] = []
    raw_ms: list[float] = []
    inner_ms: list[float] = []
    ours = raw = 0.0
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
    ours_p50, ours_p99 = _pct(ours_ms, 50), _pct(ours_ms, 99)
    raw_p50, raw_p99 = _pct(raw_ms, 50), _pct(raw_ms, 99)
    return MpcBenchRow(
        horizon=T,
        ours_ms_p50=ours_p50,
        ours_ms_p99=ours_p99,
        raw_ms_p50=raw_p50,
        raw_ms_p99=raw_p99,
        ours_solver_only_ms_p50=_pct(inner_ms, 50),
        real_time_factor=rtf,
        ratio_p50=ours_p50 / raw_p50,
        ratio_p99=ours_p99 / raw_p99,
    )


def bench_mpc(
    config: str,
    horizons: list[int],
    replans: int,
    out: Path,
    overrides: list[str] | None = None,
    progress: bool = True,
    goal_ratio: float = 1.2,
) -> MpcBenchResult:
    """Time ``replans`` replans per horizon against raw Crocoddyl, write ``out/bench_mpc.json``
    and return the result. ``progress``: a bar over the horizons (on a terminal only)."""
    overrides = list(overrides or [])
    rows = [
        _bench_horizon(config, T, replans, overrides)
        for T in progress_bar(horizons, enabled=progress, desc="bench mpc", unit="horizon")
    ]
    cfg = load_config(config, overrides)
    result = MpcBenchResult(
        config=config,
        overrides=overrides,
        dt=cfg.ocp.dt,
        nthreads=cfg.mpc.nthreads,
        replans=replans,
        replan_every=cfg.mpc.replan_every,
        goal_ratio=goal_ratio,
        worst_ratio_p50=max(r.ratio_p50 for r in rows),
        rows=rows,
        machine=Machine.here(),
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=out / "bench_mpc.json",
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
