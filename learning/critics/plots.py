"""Figures of a critic run (one run folder) and of a comparison over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.io import save_figure

__all__ = ["plot_curves_with_bands", "plot_run"]


def _figure(cols: int, width: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, cols, figsize=(width * cols, 3.4), squeeze=False)


def plot_run(cfg: Any, metrics: Sequence[dict[str, Any]], path: Path) -> None:
    if cfg.algorithm == "qlearning":
        fig, ax = _figure(3)
        x = [m["updates"] for m in metrics]
        for a, key, title in zip(
            ax[0],
            ("q_mse", "grad_a_mse", "policy_mse"),
            ("Q* MSE", "grad_a Q* MSE", "greedy policy MSE"),
            strict=True,
        ):
            mean = np.array([m[key] for m in metrics])
            std = np.array([m[f"{key}_std"] for m in metrics])
            a.plot(x, mean)
            a.fill_between(x, np.maximum(mean - std, 1e-12), mean + std, alpha=0.3)
            a.set_yscale("log")
            a.set_title(title)
            a.set_xlabel("updates")
        fig.suptitle(f"Q-learning, {cfg.critic.kind} critic, Sobolev {cfg.sobolev.enabled}")
    else:
        fig, ax = _figure(3)
        x = [m["env_steps"] for m in metrics]
        ax[0][0].plot(x, [m["return_mean"] for m in metrics])
        ax[0][0].set_title("held-out return (deterministic policy)")
        for key in ("loss_q", "loss_s", "loss_a"):
            ax[0][1].plot(x, [m.get(key, np.nan) for m in metrics], label=key)
        ax[0][1].set_yscale("log")
        ax[0][1].legend()
        ax[0][1].set_title("critic losses (per critic)")
        for key in ("beta_s", "beta_a", "alpha"):
            ax[0][2].plot(x, [m.get(key, np.nan) for m in metrics], label=key)
        ax[0][2].set_yscale("log")
        ax[0][2].legend()
        ax[0][2].set_title("gradient weights, temperature")
        for a in ax[0]:
            a.set_xlabel("environment steps")
        fig.suptitle(f"SAC on {cfg.task_name}, Sobolev {cfg.sobolev.enabled}")
    save_figure(fig, path)


def plot_curves_with_bands(
    curves: dict[str, list[list[tuple[float, float]]]],
    path: Path,
    *,
    title: str,
    xlabel: str = "environment steps",
    ylabel: str = "held-out return",
    reference: dict[str, float] | None = None,
) -> None:
    """One line per label: the mean over seeds with a min-max band; horizontal references."""
    fig, ax = _figure(1, width=7.0)
    a = ax[0][0]
    means = []
    for label, runs in curves.items():
        n = min(len(r) for r in runs)
        x = np.array([p[0] for p in runs[0][:n]])
        y = np.array([[p[1] for p in r[:n]] for r in runs])
        a.plot(x, y.mean(0), label=f"{label} ({len(runs)} seeds)")
        a.fill_between(x, y.min(0), y.max(0), alpha=0.2)
        means.append(y.mean(0))
    # One diverged evaluation (a cart that runs away) would flatten every other curve: the axis
    # stops a little below the 5th percentile of the mean curves.
    flat = np.concatenate(means)
    lo, hi = float(np.percentile(flat, 5)), float(flat.max())
    if flat.min() < lo - 0.5 * (hi - lo):
        a.set_ylim(lo - 0.15 * (hi - lo), hi + 0.05 * (hi - lo))
        title += " (axis clipped)"
    for label, value in (reference or {}).items():
        a.axhline(value, ls="--", lw=1, color="k")
        a.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=8)
    a.set_title(title, fontsize=10)
    a.set_xlabel(xlabel)
    a.set_ylabel(ylabel)
    a.legend(fontsize=8)
    save_figure(fig, path)
