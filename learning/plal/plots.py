"""Convergence figures of a PDDP / PLAL run (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpc.io import save_figure

__all__ = ["plot_convergence"]


def plot_convergence(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Policy cost against simulator calls (the paper's Fig. 3-5 axes), and the errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = [m["sim_calls_total"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(calls, [m["policy_cost_ratio"] for m in metrics], "o-", label="median")
    axes[0].plot(calls, [m["policy_cost_ratio_p90"] for m in metrics], ".--", label="p90")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("J(pi) / J* (held out)")
    axes[0].legend()
    axes[1].semilogy(calls, [m["control_error"] for m in metrics], "o-", label="control")
    axes[1].semilogy(calls, [m["dual_residual"] for m in metrics], "s-", label="dual residual")
    axes[1].set_ylabel("||u - pi(x)||")
    axes[1].legend()
    axes[2].semilogy(calls, [m["gain_error"] for m in metrics], "o-")
    axes[2].set_ylabel("gain error ||pi_x + K|| / ||K||")
    for ax in axes:
        ax.set_xlabel("simulator calls")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path, dpi=90)
