"""Differential Value Programming (Parag et al. 2022, Sec. III), top to bottom.

Iteration 0 samples N problems, solves each OCP of horizon T with a zero terminal cost, records
(x_k, cost-to-go from x_k, solver's Vx at node k) and Sobolev-fits V^0. Iteration n does the same
with V^{n-1} as the terminal cost (through the learned terminal model) and fits V^n starting
from V^{n-1}'s weights and optimiser state.

Which nodes: by default every running node k = 0..T-1 of each solution. At the fixed point
V^{n-1} = V, Bellman's principle makes the cost-to-go from every node equal to V(x_k), so all
nodes are unbiased targets; they give T samples per solve instead of one, spread along the
optimal trajectories where the controller will actually go. Early iterations see a mix of
horizons (T-k) + V^{n-1}, which only slows the first steps. ``dvp.record_nodes`` restricts it.

The value stays finite because every system's running cost vanishes at its goal (see
learning/dvp/systems); the Bellman residual between iterations is logged to show it shrinking.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from mpc.errors import VmpcError
from mpc.io import write_csv_rows
from mpc.progress import progress_bar
from mpc.value.artifact import TrainedWith, ValueMetadata
from mpc.value.features import feature_dim, goal_mask

from ..checkpoint import CheckpointError, ConfigMismatch, RunFolder, RunLocked
from ..datasets import ValueDataset
from ..export import build_metadata, save_artifact, script_value
from ..networks import ValueNet, make_value_net
from ..sobolev import SobolevFitSpec, fit_sobolev, grad_x
from .config import RESUME_MAY_DIFFER, DVPConfig, resume_differences
from .executors import ValuePayload, make_executor
from .ground_truth import map_ground_truth
from .systems import System, SystemSpec, make_system

__all__ = [
    "CheckpointError",
    "ConfigMismatch",
    "DVPResult",
    "RunLocked",
    "evaluate_value",
    "train_dvp",
]


@dataclass
class DVPResult:
    out: Path
    artifact: Path
    metrics: list[dict[str, Any]]


def _metadata(
    net: ValueNet,
    system: System,
    spec_json: str,
    cfg: DVPConfig,
    iterations: int,
    samples: int,
    notes: str = "",
) -> ValueMetadata:
    return build_metadata(
        net,
        features=cfg.network.features,
        state=system.state_layout(),
        task_params=system.task_params,
        task_fingerprint=system.fingerprint(spec_json),
        algorithm="dvp",
        trained=TrainedWith(dt=system.dt, horizon=cfg.dvp.horizon, task_box=system.task_box()),
        iterations=iterations,
        samples=samples,
        notes=notes,
    )


def _payload(net, meta: ValueMetadata) -> ValuePayload:
    arrays = {k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}
    return meta.model_dump_json(), arrays


Lift = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _no_lift(z: np.ndarray) -> tuple[np.ndarray, None]:
    return z, None


def _lifter(system: System, features: list[str]) -> Lift:
    """[x, theta] -> (network input, dphi/dx): the features appended when there are any."""
    if not features:
        return _no_lift
    return lambda z: system.lift(features, z)


def _predict(net, z: np.ndarray, nx: int, lift: Lift = _no_lift) -> tuple[np.ndarray, np.ndarray]:
    z_in, jf = lift(z)
    zt = torch.from_numpy(z_in).double().requires_grad_(True)
    v = net(zt)
    (g,) = torch.autograd.grad(v.sum(), zt)
    gx = grad_x(g, nx, None if jf is None else torch.from_numpy(jf).double())
    return v.detach().numpy(), gx.numpy()


def evaluate_value(
    net,
    val: dict[str, np.ndarray],
    nx: int,
    previous: np.ndarray | None,
    lift: Lift = _no_lift,
) -> tuple[dict[str, float], np.ndarray]:
    """Errors against the long-horizon ground truth, and the Bellman residual to V^{n-1}."""
    v, g = _predict(net, val["z"], nx, lift)
    v_true, g_true = val["value"], val["grad_x"]
    out = {
        "value_mse": float(np.mean((v - v_true) ** 2)),
        "value_rel_error": float(np.abs(v - v_true).sum() / np.abs(v_true).sum()),
        "grad_rel_error": float(
            np.linalg.norm(g - g_true, axis=1).mean() / np.linalg.norm(g_true, axis=1).mean()
        ),
        "bellman_residual": (
            float(np.abs(v - previous).mean() / np.abs(v).mean())
            if previous is not None
            else float("nan")
        ),
    }
    return out, v


def train_dvp(
    cfg: DVPConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    export: Path | None = None,
    config_text: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> DVPResult:
    """Run (or resume) DVP into the run folder ``out``; ``log`` receives one line per
    iteration (the CLI prints them), ``progress`` shows bars on a terminal.

    The folder is locked for the whole run (a second trainer on it gets :class:`RunLocked`).
    ``resume`` refuses a config that differs from the stored one outside
    :data:`RESUME_MAY_DIFFER` (:class:`ConfigMismatch`), and falls back past damaged
    checkpoints to the last intact iteration, logging one line."""

    out = Path(out)
    with RunFolder(out) as run:  # locked for the whole run; released on any exit
        return _train(cfg, out, run, resume, progress, export, config_text, log)


def _restore(
    run: RunFolder, n: int, net: ValueNet, opt: torch.optim.Optimizer, rng: np.random.Generator
) -> None:
    """Weights, optimiser and both RNG states as iteration n left them."""
    ck = run.load_iteration(n, dataset=False)
    where = run.ckpt / f"iter_{n:04d}"
    for name, apply in (
        ("model.pt", lambda: net.load_state_dict(ck["model"])),
        ("optim.pt", lambda: opt.load_state_dict(ck["optim"])),
    ):
        try:
            apply()
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise CheckpointError(where / name, f"does not fit this network: {detail}") from None
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])


def _train(
    cfg: DVPConfig,
    out: Path,
    run: RunFolder,
    resume: bool,
    progress: bool,
    export: Path | None,
    config_text: str | None,
    log: Callable[[str], None],
) -> DVPResult:
    from .plots import plot_convergence, plot_value_map

    if resume:
        stored = run.stored_config()
        diffs = [] if stored is None else resume_differences(stored, cfg)
        start = run.resume_point(
            diffs, RESUME_MAY_DIFFER, cfg.dvp.iterations, "dvp.iterations", log
        )
    else:
        if run.has_progress():
            try:
                held = f"{run.completed()} DVP iteration(s)"
            except CheckpointError as exc:
                held = f"a DVP run ({exc})"
            raise VmpcError(
                f"{out} already holds {held}: use --resume to continue it or another --out"
            )
        start = 0
        # A validation set left by a run killed in its first iteration is reused only when that
        # run had the same config; otherwise it belongs to other problems.
        try:
            stored = run.stored_config()
        except CheckpointError:
            stored = None
        if stored is None or resume_differences(stored, cfg):
            run.drop_validation()
    run.save_config(cfg.model_dump(mode="json"), config_text)
    torch.set_num_threads(1)  # fits are small; one thread keeps them bit-reproducible
    system = make_system(cfg.system)
    spec_json = TypeAdapter(SystemSpec).dump_json(cfg.system).decode()
    system.check_ready()
    nx, T = system.nx, cfg.dvp.horizon
    record = cfg.dvp.record_nodes or T
    features = cfg.network.features
    lift = _lifter(system, features)
    n_task = len(system.task_params)
    mask = None
    if cfg.network.goal_zero:
        if system.state_layout().layout != "q,v":
            raise VmpcError(f"network.goal_zero: the {system.name} state is not laid out [q, v]")
        mask = torch.from_numpy(goal_mask(nx // 2, n_task, features))
    torch.manual_seed(cfg.seed)  # the initial weights are part of the run's determinism
    net = make_value_net(
        cfg.network.kind,
        nx + n_task + feature_dim(features),
        cfg.network.hidden,
        cfg.network.residual_dim,
        mask,
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.fit.lr)
    rng = np.random.default_rng(cfg.seed)
    metrics: list[dict[str, Any]] = []
    samples_total = 0
    if start:
        _restore(run, start - 1, net, opt, rng)
        metrics = [run.load_iteration(i, dataset=False)["metrics"] for i in range(start)]
        samples_total = int(sum(m["samples"] for m in metrics))

    with make_executor(cfg.executor, spec_json) as ex:
        # Held-out problems and their ground truth: converged solves of horizon factor x T.
        try:
            val = run.load_validation()
        except CheckpointError as exc:
            log(f"{exc}: computing the validation set again (its seed makes it the same)")
            val = None
        if val is None:
            v_rows = system.sample(
                cfg.validation.samples, np.random.default_rng(cfg.validation.seed)
            )
            gt_T = cfg.validation.horizon_factor * T
            with progress_bar(
                total=len(v_rows), desc=f"ground truth (T={gt_T})", unit="ocp", enabled=progress
            ) as bar:
                outs = map_ground_truth(ex, v_rows, cfg, 1, bar.update)
            ok = [o for o in outs if o.ok]
            if not ok:
                raise VmpcError("no ground-truth solve converged; check the system config")
            val = {
                "z": np.vstack([o.z for o in ok]),
                "value": np.concatenate([o.value for o in ok]),
                "grad_x": np.vstack([o.grad_x for o in ok]),
                "rejected": np.array(len(outs) - len(ok)),
            }
            run.save_validation(val)
        previous = None if start == 0 else _predict(net, val["z"], nx, lift)[0]

        for n in range(start, cfg.dvp.iterations):
            t_iter = time.perf_counter()
            rows = system.sample(cfg.dvp.samples, rng)
            value = (
                None
                if n == 0
                else _payload(net, _metadata(net, system, spec_json, cfg, n, samples_total))
            )
            t0 = time.perf_counter()
            with progress_bar(
                total=len(rows), desc=f"iter {n}: solve", unit="ocp", enabled=progress
            ) as bar:
                outcomes = ex.map(rows, T, value, record, cfg.dvp.maxiter, bar.update)
            solve_s = time.perf_counter() - t0
            good = [o for o in outcomes if o.ok]
            rejected = Counter(o.reason for o in outcomes if not o.ok)
            if not good:
                raise VmpcError(f"iteration {n}: every solve failed ({dict(rejected)})")
            z, v, g = ([o.z for o in good], [o.value for o in good], [o.grad_x for o in good])
            # Pin V = 0, dV/dx = 0 at the goal (see System.goal_anchors), on 10 % of the samples:
            # with fewer the fit's floor error there (V >= 0) still accumulated over iterations
            # (pendulum: 1.26 % at 1 %, 0.75 % at 10 %).
            anchors = system.goal_anchors(rows, max(1, sum(len(a) for a in v) // 10))
            if anchors is not None:
                z.append(anchors)
                v.append(np.zeros(len(anchors)))
                g.append(np.zeros((len(anchors), nx)))
            raw = ValueDataset(np.vstack(z), np.concatenate(v), np.vstack(g), nx)
            z_in, jf = lift(raw.z)
            data = ValueDataset(z_in, raw.value, raw.grad_x, nx, jf)
            fit_spec = SobolevFitSpec(
                sobolev_lambda=cfg.dvp.sobolev_lambda,
                epochs=cfg.fit.epochs,
                batch_size=cfg.fit.batch_size,
                lr=cfg.fit.lr,
                val_fraction=cfg.fit.val_fraction,
                seed=cfg.seed + n,
                set_normalisation=n == 0,
            )
            t1 = time.perf_counter()
            fit = fit_sobolev(net, data, fit_spec, progress=progress, optimizer=opt)
            fit_s = time.perf_counter() - t1
            scores, predictions = evaluate_value(net, val, nx, previous, lift)
            previous = predictions
            samples_total += len(data)
            row = {
                "iteration": n,
                "solves": len(outcomes),
                "rejected": sum(rejected.values()),
                "rejected_reasons": json.dumps(dict(rejected)),
                "samples": len(data),
                "solves_per_s": len(outcomes) / solve_s,
                "solve_s": solve_s,
                "fit_s": fit_s,
                "iteration_s": time.perf_counter() - t_iter,
                "fit_train_loss": fit.final.get("train_loss", float("nan")),
                **scores,
            }
            metrics.append(row)
            run.save_iteration(
                n,
                dataset={"z": raw.z, "value": raw.value, "grad_x": raw.grad_x},
                model=net.state_dict(),
                optim=opt.state_dict(),
                rng=dict(rng.bit_generator.state),
                torch_rng=torch.get_rng_state(),
                metrics=row,
            )
            write_csv_rows(out / "metrics.csv", metrics)
            plot_convergence(metrics, out / "convergence.png", system.name)
            log(
                f"iter {n}: value rel. error {scores['value_rel_error']:.3%}, grad rel. error "
                f"{scores['grad_rel_error']:.3%}, "
                f"Bellman residual {scores['bellman_residual']:.2e}, "
                f"{len(data)} samples, {row['rejected']} rejected, {row['solves_per_s']:.0f} OCP/s"
            )

        if system.value_map_axes is not None:
            plot_value_map(system, net, ex, cfg, out / "value_map.png", progress)

    meta = _metadata(
        net,
        system,
        spec_json,
        cfg,
        cfg.dvp.iterations,
        samples_total,
        notes=f"value rel. error {metrics[-1]['value_rel_error']:.4f} on "
        f"{len(val['value'])} held-out problems",
    )
    artifact = out / "value.pt"
    scripted = script_value(net)  # once, for the run folder's copy and the --export one
    for path in (artifact, export):
        if path is not None:
            save_artifact(scripted, meta, path)
    return DVPResult(out, artifact, metrics)
