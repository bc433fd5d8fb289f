"""``vmpc bench value``: cost of a learned terminal value on the solver's hot path.

Prints per-call calc and calcDiff times of the fast float64 path and the TorchScript path, and
the time of one FDDP iteration with each, against the same iteration with the C++ quadratic
terminal, for several horizons. Every iteration starts from the same converged solution of its
own problem, and the three problems are timed in rotation so none gets the warmer cache.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from learning import ResidualValueNet, export_value
from mpc.config import Config, load_config
from mpc.io import atomic_write_text
from mpc.ocp import QuadraticTerminal, ReachingOCP
from mpc.robot_model import RobotModel, build_robot
from mpc.value.artifact import StateLayout, ValueModel, load_value_model, task_fingerprint
from mpc.value.terminal import LearnedValueTerminal

__all__ = ["bench_value"]


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


def _per_call_us(model, x: np.ndarray, n: int) -> tuple[float, float]:
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
    return calc * 1e6, ((t2 - t1) / n - calc) * 1e6


def bench_value(
    config: str,
    value: str | None,
    horizons: list[int],
    iterations: int,
    out: Path,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    cfg = load_config(config, overrides or [])
    _, robot = build_robot(cfg)
    x0 = np.concatenate([np.asarray(cfg.robot.q0, float), np.zeros(robot.nq)])
    with tempfile.TemporaryDirectory() as tmp:
        if value is None:
            path, allowed = _random_artifact(cfg, robot, Path(tmp)), [tmp]
        else:
            path, allowed = Path(value), cfg.value.allowed_dirs
        model: ValueModel = load_value_model(path, allowed)
    rows, calls = [], {}
    for T in horizons:
        ocp_spec = cfg.ocp.model_copy(update={"horizon": T})
        problems = {
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
        inits = {}
        for name, ocp in problems.items():
            g = robot.gravity_torques(x0[: robot.nq])
            ocp.solver.solve([x0] * (T + 1), [g] * T, 50, False)
            inits[name] = (list(ocp.solver.xs), list(ocp.solver.us))
            if name != "quadratic" and not calls.get(name):
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
            {
                "horizon": T,
                **{f"{k}_ms_p50": v for k, v in med.items()},
                **{f"{k}_warm_ms_p50": v for k, v in mch.items()},
                "ratio_fast": med["fast"] / med["quadratic"],
                "ratio_torchscript": med["torchscript"] / med["quadratic"],
                "ratio_fast_warm": mch["fast"] / mch["quadratic"],
                "ratio_torchscript_warm": mch["torchscript"] / mch["quadratic"],
            }
        )
    print(
        f"vmpc bench value: {model.model_id} ({model.metadata.architecture.kind}, hidden "
        f"{model.metadata.architecture.hidden}, residual {model.metadata.architecture.residual_dim})"
    )
    print(f"{'terminal':>12} {'calc us':>9} {'calcDiff us':>12}")
    for k in ("quadratic", "fast", "torchscript"):
        print(f"{k:>12} {calls[k][0]:>9.1f} {calls[k][1]:>12.1f}")
    for title, sfx in (
        ("from a fixed converged solution", ""),
        ("warm-started from the previous iteration, x0 drifting (MPC-like)", "_warm"),
    ):
        print(f"one FDDP iteration {title}, median of {iterations}:")
        print(f"{'T':>5} {'C++ quad':>10} {'fast':>10} {'ratio':>7} {'torchscr.':>10} {'ratio':>7}")
        for r in rows:
            print(
                f"{r['horizon']:>5} {r[f'quadratic{sfx}_ms_p50']:>8.3f}ms "
                f"{r[f'fast{sfx}_ms_p50']:>8.3f}ms {r[f'ratio_fast{sfx}']:>6.2f}x "
                f"{r[f'torchscript{sfx}_ms_p50']:>8.3f}ms {r[f'ratio_torchscript{sfx}']:>6.2f}x"
            )
    result = {
        "model": model.model_id,
        "calls_us": {k: {"calc": v[0], "calcDiff": v[1]} for k, v in calls.items()},
        "rows": rows,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out / "bench_value.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'bench_value.json'}")
    return result
