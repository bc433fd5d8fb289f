"""What a baseline run leaves in its folder besides summary.json: metrics.csv (one row per
evaluation) and convergence.png (held-out J(pi)/J* against simulator calls, the x axis of Le
Lidec et al.'s Fig. 3, so a baseline's curve and a PLAL run's read on the same axes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpc.io import save_figure, write_csv_rows

__all__ = ["plot_convergence", "write_metrics"]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv_rows(path, rows)


def plot_convergence(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Median and p90 of the held-out J(pi)/J* against simulator calls, log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = [r["sim_calls_total"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(calls, [r["policy_cost_ratio"] for r in rows], "o-", ms=3, label="median")
    ax.plot(calls, [r["policy_cost_ratio_p90"] for r in rows], ".--", ms=3, label="p90")
    ax.axhline(1.0, color="k", lw=0.8, alpha=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("simulator calls")
    ax.set_ylabel("J(pi) / J* (held out)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=90)
