"""PNG plots of one run: EE vs target, EE error, torques vs limits, solve-time histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..io import save_figure
from .summary import RunResult

__all__ = ["plot_run"]


def _shade_pushes(ax: Any, pushes: np.ndarray) -> None:
    for i, p in enumerate(pushes):
        ax.axvspan(p[0], p[0] + p[1], color="tab:red", alpha=0.2, label="push" if i == 0 else None)


def plot_run(
    result: RunResult, torque_limits: np.ndarray, tol_m: float, period_ms: float, out: Path
) -> list[Path]:
    a, pushes, s = result.log.arrays(), result.pushes, result.summary
    t = a["t"]
    title = f"{s.robot}  T={s.horizon}  dt={s.dt}  terminal={s.terminal}"
    paths = []

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 6))
    for i, (ax, name) in enumerate(zip(axes, "xyz", strict=False)):
        ax.plot(t, a["ee_position"][:, i], label="EE")
        ax.plot(t, a["target"][:, i], "--", color="k", label="target")
        _shade_pushes(ax, pushes)
        ax.set_ylabel(f"{name} [m]")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"EE position (world) - {title}")
    axes[-1].set_xlabel("sim time [s]")
    paths.append(save_figure(fig, out / "ee_position.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    err = np.linalg.norm(a["ee_position"] - a["target"], axis=1)
    ax.semilogy(t, np.maximum(err, 1e-6), label="|EE - target|")
    ax.axhline(tol_m, color="tab:green", ls="--", label=f"{tol_m * 1e3:g} mm")
    _shade_pushes(ax, pushes)
    ax.set_xlabel("sim time [s]")
    ax.set_ylabel("EE error [m]")
    ax.set_title(f"EE error - {title}")
    ax.legend(loc="upper right", fontsize=8)
    paths.append(save_figure(fig, out / "ee_error.png"))

    nq = a["tau"].shape[1]
    fig, axes_grid = plt.subplots(nq, 1, sharex=True, figsize=(8, 1.3 * nq + 1), squeeze=False)
    axes = axes_grid[:, 0]
    for j, ax in enumerate(axes):
        ax.plot(t, a["tau"][:, j], lw=0.8)
        for sign in (-1, 1):
            ax.axhline(sign * torque_limits[j], color="tab:red", ls=":", lw=0.8)
        _shade_pushes(ax, pushes)
        ax.set_ylabel(f"j{j + 1} [N m]", fontsize=8)
    axes[0].set_title("Commanded torques and limits")
    axes[-1].set_xlabel("sim time [s]")
    paths.append(save_figure(fig, out / "torques.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ms = a["solve_ms"]
    if ms.size:
        ax.hist(ms, bins=50, color="tab:blue")
    ax.axvline(period_ms, color="tab:red", ls="--", label=f"replan period {period_ms:g} ms")
    ax.set_xlabel("solve time per replan [ms]")
    ax.set_ylabel("replans")
    sm = s.solve_ms
    ax.set_title(f"Solve time: p50 {sm.p50:.3f} ms, p99 {sm.p99:.3f} ms")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "solve_time.png"))
    return paths
