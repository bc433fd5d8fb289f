"""Sample efficiency of Sobolev regression against plain regression (Parag et al., Fig. 5-6).

Targets come from converged long-horizon solves (horizon = validation.horizon_factor x T, the
first T nodes of each: their cost-to-go is the infinite-horizon value up to a negligible tail).
For each training-set size both losses get the same number of gradient steps; the table gives
the held-out value error, and the summary the smallest size at which each reaches the error
plain regression reaches with its largest set.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from learning.datasets import ValueDataset
from learning.dvp.config import DVPConfig
from learning.dvp.executors import make_executor
from learning.dvp.ground_truth import map_ground_truth
from learning.dvp.systems import SystemSpec, make_system
from learning.networks import make_value_net
from learning.sobolev import SobolevFitSpec, fit_sobolev
from mpc.io import atomic_write_text, save_figure

__all__ = ["bench_sobolev"]


def _dataset(outcomes) -> ValueDataset:
    ok = [o for o in outcomes if o.ok]
    return ValueDataset(
        np.vstack([o.z for o in ok]),
        np.concatenate([o.value for o in ok]),
        np.vstack([o.grad_x for o in ok]),
        ok[0].grad_x.shape[1],
    )


def bench_sobolev(
    cfg: DVPConfig, sizes: list[int], steps: int, out: Path, progress: bool = True
) -> dict[str, Any]:
    from tqdm import tqdm

    torch.set_num_threads(1)
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    T = cfg.dvp.horizon
    n_train_solves = math.ceil(max(sizes) / T)
    rng = np.random.default_rng(cfg.seed)
    with make_executor(cfg.executor, spec_json) as ex:
        with tqdm(
            total=n_train_solves + cfg.validation.samples,
            desc="ground-truth solves",
            unit="ocp",
            disable=not progress,
            leave=False,
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
    rows = []
    for n in tqdm(sizes, desc="fits", unit="size", disable=not progress, leave=False):
        idx = order[:n]
        sub = ValueDataset(pool.z[idx], pool.value[idx], pool.grad_x[idx], pool.nx)
        row: dict[str, Any] = {"samples": n}
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
            row["sobolev" if lam > 0 else "plain"] = err
        rows.append(row)
    target = rows[-1]["plain"]  # what plain regression reaches with the most data
    need = {
        k: next((r["samples"] for r in rows if r[k] <= target), None) for k in ("sobolev", "plain")
    }
    ratio = (need["sobolev"] / need["plain"]) if need["sobolev"] and need["plain"] else None
    print(
        f"vmpc bench sobolev: {system.name}, value error on {len(val)} held-out states, "
        f"{steps} gradient steps per fit"
    )
    print(f"{'samples':>8} {'sobolev':>10} {'plain':>10}")
    for r in rows:
        print(f"{r['samples']:>8} {r['sobolev']:>9.3%} {r['plain']:>9.3%}")
    print(
        f"to reach {target:.3%} (plain regression's error at {rows[-1]['samples']} samples): "
        f"Sobolev needs {need['sobolev']}, plain {need['plain']} samples"
        + (f" -> ratio {ratio:.2f} (goal <= 0.33)" if ratio else "")
    )
    result = {
        "system": system.name,
        "steps": steps,
        "rows": rows,
        "target_error": target,
        "samples_needed": need,
        "ratio": ratio,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(
        out / f"bench_sobolev_{system.name}.json", json.dumps(result, indent=2) + "\n"
    )
    _plot(rows, out / f"bench_sobolev_{system.name}.png", system.name)
    return result


def _plot(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    n = [r["samples"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [r["sobolev"] for r in rows], "o-", label="Sobolev (value + gradient)")
    ax.loglog(n, [r["plain"] for r in rows], "s-", label="plain regression (value)")
    ax.set_xlabel("training samples")
    ax.set_ylabel("held-out value error (rel. L1)")
    ax.set_title(f"{name}: sample efficiency")
    ax.legend()
    save_figure(fig, path)
