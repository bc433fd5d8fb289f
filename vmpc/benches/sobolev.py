"""Sample efficiency of Sobolev regression against plain regression (Parag et al., Fig. 5-6).

Targets come from converged long-horizon solves (horizon = validation.horizon_factor x T, the
first T nodes of each: their cost-to-go is the infinite-horizon value up to a negligible tail).
For each training-set size both losses get the same number of gradient steps; the table gives
the held-out value error, and the summary the smallest size at which each reaches the error
plain regression reaches with its largest set.

:func:`bench_sobolev` measures, writes ``bench_sobolev_<system>.json`` and its plot, and returns
a :class:`SobolevBenchResult`; it prints nothing (the CLI formats the result).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from learning.datasets import ValueDataset
from learning.dvp.config import DVPConfig
from learning.dvp.executors import make_executor
from learning.dvp.ground_truth import map_ground_truth
from learning.dvp.systems import SolveOutcome, SystemSpec, make_system
from learning.networks import make_value_net
from learning.sobolev import SobolevFitSpec, fit_sobolev
from mpc.io import atomic_write_text, save_figure
from mpc.progress import progress_bar

__all__ = ["SobolevBenchResult", "SobolevBenchRow", "bench_sobolev"]


@dataclass(frozen=True)
class SobolevBenchRow:
    """One training-set size: the held-out relative L1 value error of each loss."""

    samples: int
    sobolev: float
    plain: float


@dataclass(frozen=True)
class SobolevBenchResult:
    """What :func:`bench_sobolev` measured; :meth:`to_dict` is the JSON object."""

    system: str
    steps: int  # gradient steps per fit
    held_out: int  # validation states the errors are measured on
    rows: list[SobolevBenchRow]
    target_error: float  # plain regression's error with the largest set
    samples_needed: dict[str, int | None]  # "sobolev", "plain": smallest size reaching the target
    ratio: float | None  # sobolev / plain samples needed
    date: str
    json_path: Path
    plot_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "steps": self.steps,
            "rows": [asdict(r) for r in self.rows],
            "target_error": self.target_error,
            "samples_needed": dict(self.samples_needed),
            "ratio": self.ratio,
            "date": self.date,
        }


def _dataset(outcomes: Sequence[SolveOutcome]) -> ValueDataset:
    ok = [o for o in outcomes if o.ok]
    return ValueDataset(
        np.vstack([o.z for o in ok]),
        np.concatenate([o.value for o in ok]),
        np.vstack([o.grad_x for o in ok]),
        ok[0].grad_x.shape[1],
    )


def bench_sobolev(
    cfg: DVPConfig, sizes: list[int], steps: int, out: Path, progress: bool = True
) -> SobolevBenchResult:
    """Fit the value with and without the gradient term on each training-set size, write
    ``out/bench_sobolev_<system>.json`` and its plot, and return the result. ``progress``: bars
    over the ground-truth solves and the fits (on a terminal only)."""
    torch.set_num_threads(1)
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    T = cfg.dvp.horizon
    n_train_solves = math.ceil(max(sizes) / T)
    rng = np.random.default_rng(cfg.seed)
    with make_executor(cfg.executor, spec_json) as ex:
        with progress_bar(
            enabled=progress,
            total=n_train_solves + cfg.validation.samples,
            desc="ground-truth solves",
            unit="ocp",
        ) as bar:
            pool = _dataset(
                map_ground_truth(ex, system.sample(n_train_solves, rng), cfg, T, bar.update)
            )
            val = _dataset(
                map_ground_truth(
                    ex,
                    system.sample(
                        cfg.validation.samples, np.random.default_rng(cfg.validation.seed)
                    ),
                    cfg,
                    1,
                    bar.update,
                )
            )
    order = rng.permutation(len(pool))
    rows: list[SobolevBenchRow] = []
    for n in progress_bar(sizes, enabled=progress, desc="fits", unit="size"):
        idx = order[:n]
        sub = ValueDataset(pool.z[idx], pool.value[idx], pool.grad_x[idx], pool.nx)
        errors: dict[str, float] = {}
        for lam in (cfg.dvp.sobolev_lambda or 1.0, 0.0):
            torch.manual_seed(cfg.seed)
            net = make_value_net(
                cfg.network.kind, pool.z.shape[1], cfg.network.hidden, cfg.network.residual_dim
            ).double()
            epochs = max(1, math.ceil(steps / math.ceil(n / cfg.fit.batch_size)))
            fit_sobolev(
                net,
                sub,
                SobolevFitSpec(
                    sobolev_lambda=lam,
                    epochs=epochs,
                    batch_size=cfg.fit.batch_size,
                    lr=cfg.fit.lr,
                    val_fraction=0.0,
                    seed=cfg.seed,
                ),
                progress=False,
            )
            with torch.no_grad():
                pred = net(torch.from_numpy(val.z).double()).numpy()
            err = float(np.abs(pred - val.value).sum() / np.abs(val.value).sum())
            errors["sobolev" if lam > 0 else "plain"] = err
        rows.append(SobolevBenchRow(n, errors["sobolev"], errors["plain"]))
    target = rows[-1].plain  # what plain regression reaches with the most data
    need = {
        "sobolev": next((r.samples for r in rows if r.sobolev <= target), None),
        "plain": next((r.samples for r in rows if r.plain <= target), None),
    }
    ratio = (need["sobolev"] / need["plain"]) if need["sobolev"] and need["plain"] else None
    result = SobolevBenchResult(
        system=system.name,
        steps=steps,
        held_out=len(val),
        rows=rows,
        target_error=target,
        samples_needed=need,
        ratio=ratio,
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=out / f"bench_sobolev_{system.name}.json",
        plot_path=out / f"bench_sobolev_{system.name}.png",
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    _plot(rows, result.plot_path, system.name)
    return result


def _plot(rows: list[SobolevBenchRow], path: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    n = [r.samples for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [r.sobolev for r in rows], "o-", label="Sobolev (value + gradient)")
    ax.loglog(n, [r.plain for r in rows], "s-", label="plain regression (value)")
    ax.set_xlabel("training samples")
    ax.set_ylabel("held-out value error (rel. L1)")
    ax.set_title(f"{name}: sample efficiency")
    ax.legend()
    save_figure(fig, path)
