"""``vmpc bench value``: cost of a learned terminal value on the solver's hot path.

Prints per-call calc and calcDiff times of the fast float64 path and the TorchScript path, and
the time of one FDDP iteration with each, against the same iteration with the C++ quadratic
terminal, for several horizons. Every iteration starts from the same converged solution of its
own problem, and the three problems are timed in rotation so none gets the warmer cache.

:func:`bench_value` measures, writes ``bench_value.json`` and returns a
:class:`ValueBenchResult`; it prints nothing (the CLI formats the result).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learning.export import export_value
from learning.networks import ResidualValueNet
from mpc.config import Config, load_config
from mpc.io import atomic_write_text
from mpc.ocp import QuadraticTerminal, ReachingOCP
from mpc.robot_model import RobotModel, build_robot
from mpc.value.artifact import (
    StateLayout,
    ValueModel,
    file_sha256,
    load_value_model,
    task_fingerprint,
)
from mpc.value.terminal import LearnedValueTerminal

__all__ = ["TERMINALS", "CallTimes", "ValueBenchResult", "ValueBenchRow", "bench_value"]

# The C++ quadratic terminal, then the learned value's two evaluation paths.
TERMINALS = ("quadratic", "fast", "torchscript")


@dataclass(frozen=True)
class CallTimes:
    """Per-call time of a terminal model [us]: calc, and calcDiff after a calc at the same x."""

    calc_us: float
    calc_diff_us: float


@dataclass(frozen=True)
class ValueBenchRow:
    """One horizon: median time [ms] of one FDDP iteration with each terminal, from a fixed
    converged solution and warm-started along a drifting x0 (``_warm``), and the ratios of the
    learned paths to the C++ quadratic."""

    horizon: int
    quadratic_ms_p50: float
    fast_ms_p50: float
    torchscript_ms_p50: float
    quadratic_warm_ms_p50: float
    fast_warm_ms_p50: float
    torchscript_warm_ms_p50: float
    ratio_fast: float
    ratio_torchscript: float
    ratio_fast_warm: float
    ratio_torchscript_warm: float


@dataclass(frozen=True)
class ValueBenchResult:
    """What :func:`bench_value` measured; :meth:`to_dict` is the ``bench_value.json`` object."""

    model: str  # the artifact's model id
    architecture: str  # e.g. "residual"
    hidden: list[int]
    residual_dim: int | None
    iterations: int  # timed FDDP iterations per horizon and terminal
    calls: dict[str, CallTimes]  # by terminal, in the order they were timed
    rows: list[ValueBenchRow]
    date: str
    json_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "calls_us": {
                k: {"calc": v.calc_us, "calcDiff": v.calc_diff_us} for k, v in self.calls.items()
            },
            "rows": [asdict(r) for r in self.rows],
            "date": self.date,
        }


def _random_artifact(cfg: Config, robot: RobotModel, folder: Path) -> Path:
    """A default-sized residual value with random weights: the timing does not depend on what
    the weights learned."""
    import torch

    torch.manual_seed(0)
    nx = 2 * robot.nq
    net = ResidualValueNet(nx)
    path = folder / "bench_random_value.pt"
    export_value(
        net,
        path,
        state=StateLayout(robot=cfg.robot.name, joint_names=robot.joint_names, nx=nx),
        task_params=[],
        task_fingerprint=task_fingerprint(cfg),
        algorithm="random-bench",
    )
    return path


def _per_call_us(model: Any, x: np.ndarray, n: int) -> CallTimes:
    """calc at alternating states (no cache hits), and calcDiff after a calc at the same x
    (as in FDDP's backward pass): calc+calcDiff pairs minus the calc time."""
    data = model.createData()
    xs = [x, x + 1e-3]
    t0 = time.perf_counter()
    for i in range(n):
        model.calc(data, xs[i & 1])
    t1 = time.perf_counter()
    for i in range(n):
        model.calc(data, xs[i & 1])
        model.calcDiff(data, xs[i & 1])
    t2 = time.perf_counter()
    calc = (t1 - t0) / n
    return CallTimes(calc * 1e6, ((t2 - t1) / n - calc) * 1e6)


def bench_value(
    config: str,
    value: str | None,
    horizons: list[int],
    iterations: int,
    out: Path,
    overrides: list[str] | None = None,
) -> ValueBenchResult:
    """Time the terminal models of ``value`` (default: a random default-sized residual network)
    and one FDDP iteration with each for every horizon, write ``out/bench_value.json`` and
    return the result."""
    cfg = load_config(config, overrides or [])
    _, robot = build_robot(cfg)
    x0 = np.concatenate([np.asarray(cfg.robot.q0, float), np.zeros(robot.nq)])
    with tempfile.TemporaryDirectory() as tmp:
        if value is None:  # our own file: its TorchScript may run
            path, allowed = _random_artifact(cfg, robot, Path(tmp)), [tmp]
            trusted = [file_sha256(path)]
        else:
            path, allowed = Path(value), cfg.value.allowed_dirs
            trusted = cfg.value.trusted_sha256
        model: ValueModel = load_value_model(path, allowed, trusted_sha256=trusted, module=True)
    rows: list[ValueBenchRow] = []
    calls: dict[str, CallTimes] = {}
    for T in horizons:
        ocp_spec = cfg.ocp.model_copy(update={"horizon": T})
        problems: dict[str, ReachingOCP] = {
            "quadratic": ReachingOCP(
                robot,
                ocp_spec,
                np.asarray(cfg.task.target),
                QuadraticTerminal(cfg.ocp.terminal),
                x0,
            )
        }
        for ev in ("fast", "torchscript"):
            problems[ev] = ReachingOCP(
                robot, ocp_spec, np.asarray(cfg.task.target), LearnedValueTerminal(model, ev), x0
            )
        inits: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for name, ocp in problems.items():
            g = robot.gravity_torques(x0[: robot.nq])
            ocp.solver.solve([x0] * (T + 1), [g] * T, 50, False)
            inits[name] = (list(ocp.solver.xs), list(ocp.solver.us))
            if name != "quadratic" and name not in calls:
                calls[name] = _per_call_us(ocp.problem.terminalModel, ocp.solver.xs[-1], 2000)
        if "quadratic" not in calls:
            calls["quadratic"] = _per_call_us(problems["quadratic"].problem.terminalModel, x0, 2000)
        # (a) the same iteration again and again from a fixed converged solution;
        # (b) MPC-like: x0 drifts along a smooth path and each iteration is warm-started from
        # the previous one's solution, as in the closed loop.
        fixed: dict[str, list[float]] = {k: [] for k in problems}
        chain: dict[str, list[float]] = {k: [] for k in problems}
        order = list(problems)
        nq = robot.nq
        for i in range(iterations + 20):
            drift = x0.copy()
            drift[:nq] += 0.05 * np.sin(0.01 * i + np.arange(nq))
            for name in order[i % 3 :] + order[: i % 3]:
                ocp, (xs, us) = problems[name], inits[name]
                t0 = time.perf_counter()
                ocp.solver.solve(xs, us, 1, False)
                t1 = time.perf_counter()
                ocp.problem.x0 = drift
                ocp.solver.solve(ocp.solver.xs, ocp.solver.us, 1, False)
                t2 = time.perf_counter()
                ocp.problem.x0 = x0
                if i >= 20:
                    fixed[name].append((t1 - t0) * 1e3)
                    chain[name].append((t2 - t1) * 1e3)
        med = {k: float(np.median(v)) for k, v in fixed.items()}
        mch = {k: float(np.median(v)) for k, v in chain.items()}
        rows.append(
            ValueBenchRow(
                horizon=T,
                quadratic_ms_p50=med["quadratic"],
                fast_ms_p50=med["fast"],
                torchscript_ms_p50=med["torchscript"],
                quadratic_warm_ms_p50=mch["quadratic"],
                fast_warm_ms_p50=mch["fast"],
                torchscript_warm_ms_p50=mch["torchscript"],
                ratio_fast=med["fast"] / med["quadratic"],
                ratio_torchscript=med["torchscript"] / med["quadratic"],
                ratio_fast_warm=mch["fast"] / mch["quadratic"],
                ratio_torchscript_warm=mch["torchscript"] / mch["quadratic"],
            )
        )
    arch = model.metadata.architecture
    result = ValueBenchResult(
        model=model.model_id,
        architecture=arch.kind,
        hidden=list(arch.hidden),
        residual_dim=arch.residual_dim,
        iterations=iterations,
        calls=calls,
        rows=rows,
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=out / "bench_value.json",
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
