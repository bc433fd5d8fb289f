"""DVP figures: convergence per iteration, and value maps (ground truth, DVP, difference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from mpc.io import save_figure
from mpc.progress import progress_bar

from .ground_truth import map_ground_truth

__all__ = ["plot_convergence", "plot_value_map"]


def plot_convergence(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    it = [r["iteration"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.semilogy(it, [r["value_rel_error"] for r in rows], "o-", label="value (rel. L1)")
    a.semilogy(it, [r["grad_rel_error"] for r in rows], "s-", label="gradient (rel. L2)")
    a.axhline(0.01, color="gray", ls=":", lw=0.8, label="1 %")
    a.set_xlabel("DVP iteration")
    a.set_ylabel("error vs ground truth")
    a.set_title(f"{name}: absolute criterion")
    a.legend(fontsize=8)
    br = [r["bellman_residual"] for r in rows]
    b.semilogy(it[1:], br[1:], "o-", color="tab:purple")
    b.set_xlabel("DVP iteration")
    b.set_ylabel("mean |V^n - V^(n-1)| / mean |V^n|")
    b.set_title(f"{name}: Bellman residual")
    save_figure(fig, path)


def plot_value_map(system, net, executor, cfg, path: Path, progress: bool, n: int = 31) -> None:
    """Pendulum: (angle, velocity). Unicycle: (x, y) at heading 0. Ground truth by long solves."""
    box = np.array(system.box, float)
    a = np.linspace(box[0, 0], box[0, 1], n)
    b = np.linspace(box[1, 0], box[1, 1], n)
    aa, bb = np.meshgrid(a, b)
    rows = np.zeros((n * n, system.nx))
    rows[:, 0], rows[:, 1] = aa.ravel(), bb.ravel()
    with progress_bar(
        total=len(rows), desc="value map ground truth", unit="ocp", enabled=progress
    ) as bar:
        outs = map_ground_truth(executor, rows, cfg, 1, bar.update)
    truth = np.array([o.value[0] if o.ok else np.nan for o in outs]).reshape(n, n)
    with torch.no_grad():
        learned = net(torch.from_numpy(rows).double()).numpy().reshape(n, n)
    xl, yl = system.value_map_axes or ("x0", "x1")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    vmin, vmax = np.nanmin(truth), np.nanmax(truth)
    ext = [a[0], a[-1], b[0], b[-1]]
    for ax, img, title in ((axes[0], truth, "ground truth"), (axes[1], learned, "DVP")):
        im = ax.imshow(img, origin="lower", extent=ext, aspect="auto", vmin=vmin, vmax=vmax)
        ax.set_title(f"{system.name}: {title}")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        fig.colorbar(im, ax=ax)
    diff = learned - truth
    lim = np.nanmax(np.abs(diff))
    im = axes[2].imshow(
        diff, origin="lower", extent=ext, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim
    )
    axes[2].set_title("DVP - ground truth")
    axes[2].set_xlabel(xl)
    fig.colorbar(im, ax=axes[2])
    save_figure(fig, path)
