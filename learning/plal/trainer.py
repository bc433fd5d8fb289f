"""PDDP and PLAL (Le Lidec et al. 2022), top to bottom.

Setup. Sample N problems beta_i = (x0, theta) once (the paper keeps them fixed, Sec. IV), and N_v
held-out problems with their TO optimum (BoxFDDP from a still guess, ``validation.maxiter``).

Each iteration k:

1. **Initial guess** (Alg. 1 line 2). PDDP: the rollout of pi_k from each x0. PLAL: the rollout at
   k = 0, then the previous OC solution (the ADMM primal iterate).
2. **OC phase** (Alg. 1 line 3 / Alg. 2 line 2), on the shared executors, one problem per task:
   * PDDP: min_u R(beta; u) (eq. 6), BoxFDDP with the control box (``constrained``).
   * PLAL: min_u R(beta; u) + sum_t mu/2 ||u_t + lambda_t/mu - pi_k(x_t)||^2 (eq. 13), the term
     a per-knot residual in (x_t, u_t) with its derivatives through pi_k (:mod:`.consensus`).
   * PLAL+M (eq. 15-16): the OC states 1x and the policy's states 2x are separate variables.
     The OC phase adds mu/2 ||u_t + lambda_t/mu - pi_k(2x_t)||^2 + mu/2 ||1x_t + gamma_t/mu -
     2x_t||^2 with 2x fixed, so the solver never evaluates the policy or its Jacobian. We solve
     the 2X-step in closed form for the state term, 2x = 1x + gamma/mu, after which the update
     (16) leaves gamma = 0: 2X is the last OC trajectory (the rollout of pi_0 at k = 0), and the
     state term is a proximal term keeping the OC near where the frozen references hold.
   * ``constrained: false`` (-C): FDDP without the box; the policy still squashes into it.
3. **Supervised step** (Alg. 1 line 4 / Alg. 2 line 3): Adam on
   1/2 ||pi(z_t) - y_t||^2 (eq. 7) with y = u (PDDP) or u + lambda/mu (PLAL, the theta-part of
   eq. 13 and 15), plus ``sobolev`` * 1/2 ||v^T(-K_t) - d/dx (v^T pi(z_t))||^2
   for one random unit control direction v per sample (the stochastic Sobolev term after
   eq. 8: one backward pass instead of nu). Crocoddyl's feedback is du = -K dx, hence -K.
4. **Dual update** (Alg. 2 line 4, eq. 16): lambda <- lambda + mu (u - pi_{k+1}(x)), and under +M
   gamma stays 0 and is not carried (see +M above). Then mu <- min(mu * mu_growth, mu_max):
   constant by default, as in the paper's experiments.

Per iteration the held-out problems give J(beta; pi)/J*(beta) (the policy's closed-loop cost
against the TO optimum), the control and gain errors of pi along the TO solutions, and the run
logs the dual residual ||u - pi(x)|| and the simulator calls (dynamics evaluations of the OC phase
plus rollout steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from mpc.errors import VmpcError
from mpc.io import atomic_write_text, write_csv_rows
from mpc.policy.evaluator import PolicyEvaluator
from mpc.progress import progress_bar

from ..checkpoint import CheckpointError, ConfigMismatch, RunFolder
from ..executors import Executor, make_executor
from ..networks import PolicyNet
from ..sobolev import stochastic_jacobian_loss
from .config import RESUME_MAY_DIFFER, PLALConfig, resume_differences
from .oc_phase import OCJob, OCResult, Rollouts, build_worker, run_job, worker_context
from .systems import OCPFamily, make_family

__all__ = [
    "ConfigMismatch",
    "PLALResult",
    "held_out_set",
    "still_job",
    "system_fingerprint",
    "policy_arrays",
    "train_plal",
]

DATASET_KEYS = ("xs", "us", "gains", "lam")
VALIDATION_KEYS = ("rows", "xs", "us", "gains", "cost")


@dataclass
class PLALResult:
    out: Path
    artifact: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


def policy_arrays(net: PolicyNet) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}


def _evaluator(net: PolicyNet) -> PolicyEvaluator:
    return PolicyEvaluator(policy_arrays(net), net.activation)


def _z(xs: np.ndarray, rows: np.ndarray, nx: int) -> np.ndarray:
    """(N, T, nx) states -> (N*T, nx + n_task) policy inputs [x, theta]."""
    n, t = xs.shape[:2]
    theta = rows[:, nx:]
    if theta.shape[1] == 0:
        return xs.reshape(n * t, -1)
    return np.concatenate([xs, np.repeat(theta[:, None, :], t, axis=1)], axis=2).reshape(n * t, -1)


def _fit(
    net: PolicyNet,
    opt: torch.optim.Optimizer,
    z: np.ndarray,
    y: np.ndarray,
    z_gain: np.ndarray,
    du_dx: np.ndarray,
    nx: int,
    cfg: PLALConfig,
    gen: torch.Generator,
    progress: bool,
) -> dict[str, float]:
    """The supervised step: eq. (7) (+ the stochastic Sobolev term of eq. (8)).

    Both terms are made dimensionless so that one ``sobolev`` weight serves every system:
    controls are measured in units h (their spread in the data, at most the box's half-width),
    and the gain term is divided by
    the data's mean ||v^T G/h||^2 = ||G/h||_F^2 / nu. Unscaled, the pendulum's gains (tens of
    N m/rad) made the gain term ~10x the control term and the fit ignored the controls."""
    lb, ub = (cast(torch.Tensor, b).detach() for b in (net.u_lb, net.u_ub))
    # The unit of each control: its spread in the data, at most the box half-width. The arm's
    # box (+-320 N m on the shoulder) is ten times what the solutions use, and errors of 20 N m
    # looked small in half-widths while they made every rollout diverge.
    spread = torch.from_numpy(np.asarray(y).reshape(-1, net.nu).std(0))
    half = torch.minimum(0.5 * (ub - lb), torch.clamp(spread, min=1e-3 * float((ub - lb).max())))
    # A squashed policy lives in the box, where argmin (pi - y)^2 is clip(y): the same optimum
    # as the ADMM target u + lambda/mu, without chasing values it can never reach.
    yt = torch.minimum(torch.maximum(torch.from_numpy(y), lb), ub)
    zt = torch.from_numpy(z)
    zg, gt = torch.from_numpy(z_gain), torch.from_numpy(du_dx) / half[None, :, None]
    g_scale = max(float((gt**2).sum((1, 2)).mean()) / net.nu, 1e-12)
    w = cfg.algorithm.sobolev
    bs = cfg.fit.batch_size
    n = len(zt)

    def scaled(zb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = net(zb) / half
        return out

    last = {"fit_u_nmse": float("nan"), "fit_sobolev_nmse": float("nan")}
    # Each fit anneals from lr to lr/10 (cosine), with Adam's moments carried across iterations:
    # a constant rate left the policy jittering between iterations at the precision we want.
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] = cfg.fit.lr
    steps = cfg.fit.epochs * -(-len(zt) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.fit.lr * 0.1)
    bar = progress_bar(range(cfg.fit.epochs), desc="policy fit", unit="epoch", enabled=progress)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        tot_u = tot_s = 0.0
        for i in range(0, n, bs):
            b = perm[i : i + bs]
            loss_u = 0.5 * ((scaled(zt[b]) - yt[b] / half) ** 2).sum(1).mean()
            loss = loss_u
            if w > 0:
                v = torch.randn(len(b), net.nu, generator=gen, dtype=torch.float64)
                v = v / v.norm(dim=1, keepdim=True)
                loss_s = stochastic_jacobian_loss(scaled, zg[b], gt[b], v, nx) / g_scale
                loss = loss + w * loss_s
                tot_s += float(loss_s.detach()) * len(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_u += float(loss_u.detach()) * len(b)
        last = {"fit_u_nmse": 2 * tot_u / n, "fit_sobolev_nmse": 2 * tot_s / n if w > 0 else 0.0}
        bar.set_postfix(u=f"{last['fit_u_nmse']:.2e}")
    return last


def _held_out_scores(
    policy: PolicyEvaluator, val: dict[str, np.ndarray], roll: Rollouts, nx: int
) -> dict[str, float]:
    """J(pi)/J* on the held-out problems, and pi's control and gain errors along their TO
    solutions (Crocoddyl's du = -K dx: the gain error is ||d pi/dx + K|| / ||K||)."""
    r_xs, _, costs = roll.run(policy, val["rows"])
    # A diverged rollout costs inf (not nan), so medians and quantiles stay meaningful.
    costs = np.where(np.isfinite(costs), costs, np.inf)
    ratio = costs / np.maximum(val["cost"], 1e-12)
    task = [
        roll.family.task_error(x[-1], row[nx:]) for x, row in zip(r_xs, val["rows"], strict=True)
    ]
    task_errors = np.array([np.inf if e is None or not np.isfinite(e) else e for e in task])
    z = _z(val["xs"][:, :-1], val["rows"], nx)
    u_err, g_err, g_norm = [], [], []
    for zi, ui, ki in zip(
        z,
        val["us"].reshape(len(z), -1),
        val["gains"].reshape(len(z), len(val["us"][0][0]), nx),
        strict=True,
    ):
        p, jac = policy.action_and_jacobian(zi)
        u_err.append(np.linalg.norm(p - ui))
        g_err.append(np.linalg.norm(jac[:, :nx] + ki))
        g_norm.append(np.linalg.norm(ki))
    return {
        "policy_cost_ratio": float(np.median(ratio)),
        "policy_cost_ratio_mean": float(np.mean(ratio[np.isfinite(ratio)]))
        if np.isfinite(ratio).any()
        else float("inf"),
        "policy_cost_ratio_p90": float(np.quantile(ratio, 0.9)),
        "control_error": float(np.mean(u_err)),
        "gain_error": float(np.sum(g_err) / max(np.sum(g_norm), 1e-12)),
        **(
            {"final_task_error_median": float(np.median(task_errors))}
            if task[0] is not None
            else {}
        ),
        "diverged": int((~np.isfinite(costs)).sum()),
    }


def _actions(policy: PolicyEvaluator, xs: np.ndarray, rows: np.ndarray, nx: int) -> np.ndarray:
    """pi at (N, T, nx) states -> (N, T, nu)."""
    n, t = xs.shape[:2]
    return np.array([policy.action(z) for z in _z(xs, rows, nx)]).reshape(n, t, -1)


def still_job(family: OCPFamily, rows: np.ndarray, horizon: int, maxiter: int) -> OCJob:
    """Plain solves (no consensus, with the box) from the usual still guess: x0 held, the
    family's holding controls (zero, or the arm's gravity torques)."""
    nx = family.nx
    still_us = np.array([np.tile(family.init_controls(r[:nx]), (horizon, 1)) for r in rows])
    still_xs = np.repeat(rows[:, None, :nx], horizon + 1, axis=1)
    return OCJob(horizon, maxiter, True, "none", 0.0, rows, still_xs, still_us)


def held_out_set(
    ex: Executor, family: OCPFamily, rows: np.ndarray, horizon: int, maxiter: int, progress: bool
) -> dict[str, np.ndarray]:
    """Held-out problems with their TO optimum (BoxFDDP from a still guess): rows, xs, us,
    gains and cost of those whose solve succeeded."""
    job = still_job(family, rows, horizon, maxiter)
    T = horizon
    res, _ = _oc_phase(ex, job, progress, f"TO optimum (T={T})")
    ok = [i for i, r in enumerate(res) if r.ok]
    if not ok:
        raise VmpcError("no held-out solve succeeded; check the system config")
    return {
        "rows": rows[ok],
        "xs": np.array([res[i].xs for i in ok]),
        "us": np.array([res[i].us for i in ok]),
        "gains": np.array([res[i].gains for i in ok]),
        "cost": np.array([res[i].cost for i in ok]),
    }


def _consensus_residual(
    us: np.ndarray, pis: np.ndarray, u_lb: np.ndarray, u_ub: np.ndarray
) -> np.ndarray:
    """u - pi(x), with 0 where u sits on a bound and pi is within 1 % of the box width of it: a
    tanh-squashed policy only approaches a bound, and counting that gap as disagreement would
    grow lambda without end on every saturated knot (measured on the pendulum: the targets
    u + lambda/mu drifted out of the box and the fit's error grew 15x in 8 iterations)."""
    residual = us - pis
    tol = 0.01 * (u_ub - u_lb)
    at_ub = (us >= u_ub - 1e-9) & (pis >= u_ub - tol)
    at_lb = (us <= u_lb + 1e-9) & (pis <= u_lb + tol)
    residual[at_ub | at_lb] = 0.0
    return residual


def _oc_phase(ex: Executor, job: OCJob, progress: bool, desc: str) -> tuple[list[OCResult], float]:
    t0 = time.perf_counter()
    with progress_bar(total=len(job.rows), desc=desc, unit="ocp", enabled=progress) as bar:
        res = run_job(ex, job, bar.update)
    return res, time.perf_counter() - t0


def train_plal(
    cfg: PLALConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    export: Path | None = None,
    config_text: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> PLALResult:
    """Run (or resume) PDDP / PLAL into the run folder ``out`` (locked for the whole run)."""
    out = Path(out)
    with RunFolder(out, DATASET_KEYS, VALIDATION_KEYS) as run:
        return _train(cfg, out, run, resume, progress, export, config_text, log)


def _start(cfg: PLALConfig, run: RunFolder, resume: bool, log) -> int:
    start = run.begin(
        resume,
        lambda stored: resume_differences(stored, cfg),
        RESUME_MAY_DIFFER,
        cfg.iterations,
        "iterations",
        "a policy run",
        log,
    )
    if not resume:
        run.drop_validation()
    return start


def _train(cfg, out, run, resume, progress, export, config_text, log) -> PLALResult:
    from .plots import plot_convergence

    start = _start(cfg, run, resume, log)
    run.save_config(cfg.model_dump(mode="json"), config_text)
    torch.set_num_threads(1)  # small fits; one thread keeps them bit-reproducible
    alg, P = cfg.algorithm, cfg.problems
    family = make_family(cfg.system, P.terminal_weight)
    nx, nu, T = family.nx, family.nu, P.horizon
    n_task = len(family.task_params)
    u_lb, u_ub = family.control_box()
    roll = Rollouts(family, T)

    torch.manual_seed(cfg.seed)  # the initial weights are part of the run's determinism
    net = PolicyNet(
        nx + n_task, u_lb.tolist(), u_ub.tolist(), cfg.policy.hidden, cfg.policy.activation
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.fit.lr)
    rng = np.random.default_rng(cfg.seed)
    rows = family.sample(P.samples, rng)  # fixed for the run (Sec. IV)
    gen = torch.Generator().manual_seed(cfg.seed)
    N = len(rows)
    lam = np.zeros((N, T, nu))
    prev: tuple[np.ndarray, np.ndarray] | None = None  # the last OC solution (PLAL's warm start)
    mu = alg.mu
    metrics: list[dict[str, Any]] = []
    calls_total = 0
    if start:
        ck = run.load_iteration(start - 1)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        d = ck["dataset"]
        gen.set_state(torch.from_numpy(d["gen_state"]).to(torch.uint8))
        lam, prev = d["lam"], (d["xs"], d["us"])
        metrics = [run.load_iteration(i, dataset=False)["metrics"] for i in range(start)]
        calls_total = int(metrics[-1]["sim_calls_total"])
        mu = float(metrics[-1]["mu_next"])

    with make_executor(cfg.executor, build_worker, worker_context(cfg)) as ex:
        # Held-out problems and their TO optimum, once per run folder.
        try:
            val = run.load_validation()
        except CheckpointError as exc:
            log(f"{exc}: computing the held-out set again (its seed makes it the same)")
            val = None
        if val is None:
            v_rows = family.sample(
                cfg.validation.samples, np.random.default_rng(cfg.validation.seed)
            )
            val = held_out_set(ex, family, v_rows, T, cfg.validation.maxiter, progress)
            run.save_validation(val)

        for k in range(start, cfg.iterations):
            t_iter = time.perf_counter()
            policy = _evaluator(net)
            # 1. the initial guess, and the policy's own states under +M
            if alg.kind == "plal" and prev is not None:
                guess, calls_roll = prev, 0
            else:
                guess, calls_roll = roll.run(policy, rows)[:2], N * T
            x_ref = guess[0][:, :T]  # 2X under +M
            # 2. the OC phase
            mode: Literal["none", "policy", "reference"] = (
                "none"
                if alg.kind == "pddp"
                else ("reference" if alg.multiple_shooting else "policy")
            )
            job = OCJob(
                T,
                P.maxiter,
                alg.constrained,
                mode,
                mu,
                rows,
                guess[0],
                guess[1],
                lam=lam,
                x_ref=x_ref if mode == "reference" else None,
                u_ref=_actions(policy, x_ref, rows, nx) if mode == "reference" else None,
                policy=(policy_arrays(net), net.activation) if mode == "policy" else None,
            )
            res, oc_s = _oc_phase(ex, job, progress, f"iter {k}: OC")
            good = np.array([r.ok for r in res])
            if not good.any():
                raise VmpcError(f"iteration {k}: every OC solve failed")
            xs = np.array([r.xs if r.ok else g for r, g in zip(res, guess[0], strict=True)])
            us = np.array([r.us if r.ok else g for r, g in zip(res, guess[1], strict=True)])
            gains = np.array([r.gains for r in res])
            calls_oc = sum(r.calls for r in res)
            # 3. the supervised step, on the problems whose solve succeeded
            x_fit = xs[:, :T]
            y = us + lam / mu if alg.kind == "plal" else us
            z_fit = _z(x_fit[good], rows[good], nx)
            if k == 0:
                zt = torch.from_numpy(z_fit)
                net.set_normalisation(zt.mean(0), zt.std(0))
            t_fit = time.perf_counter()
            fit = _fit(
                net,
                opt,
                z_fit,
                y[good].reshape(-1, nu),
                _z(xs[good, :T], rows[good], nx),
                -gains[good].reshape(-1, nu, nx),
                nx,
                cfg,
                gen,
                progress,
            )
            fit_s = time.perf_counter() - t_fit
            # 4. the dual update with the new policy
            policy = _evaluator(net)
            residual = _consensus_residual(us, _actions(policy, x_fit, rows, nx), u_lb, u_ub)
            if alg.kind == "plal":
                lam = lam + mu * residual * good[:, None, None]
            prev = (xs, us)
            mu_next = min(mu * alg.mu_growth, alg.mu_max)
            calls_total += calls_oc + calls_roll
            scores = _held_out_scores(policy, val, roll, nx)
            row = {
                "iteration": k,
                **scores,
                "dual_residual": float(np.linalg.norm(residual[good], axis=2).mean()),
                "oc_iterations": float(np.mean([r.iterations for r in res if r.ok])),
                "oc_converged": float(np.mean([r.converged for r in res])),
                "oc_failed": int((~good).sum()),
                "oc_cost": float(np.mean([r.cost for r in res if r.ok])),
                "sim_calls": calls_oc + calls_roll,
                "sim_calls_total": calls_total,
                "samples": int(good.sum()) * T,
                "mu": mu,
                "mu_next": mu_next,
                "oc_s": oc_s,
                "fit_s": fit_s,
                "iteration_s": time.perf_counter() - t_iter,
                **fit,
            }
            mu = mu_next
            metrics.append(row)
            run.save_iteration(
                k,
                dataset={
                    "xs": xs,
                    "us": us,
                    "gains": gains,
                    "lam": lam,
                    "gen_state": gen.get_state().numpy(),
                },
                model=net.state_dict(),
                optim=opt.state_dict(),
                rng=dict(rng.bit_generator.state),
                torch_rng=torch.get_rng_state(),
                metrics=row,
            )
            write_csv_rows(out / "metrics.csv", metrics)
            plot_convergence(metrics, out / "convergence.png", f"{alg.kind} on {family.name}")
            log(
                f"iter {k}: J(pi)/J* {scores['policy_cost_ratio']:.4f} (median), control error "
                f"{scores['control_error']:.3e}, gain error {scores['gain_error']:.3f}, dual "
                f"residual {row['dual_residual']:.3e}, {row['oc_iterations']:.1f} OC iterations"
                + (
                    f", final EE error {scores['final_task_error_median'] * 1e3:.1f} mm (median)"
                    if "final_task_error_median" in scores
                    else ""
                )
            )

    summary = _summary(cfg, family, metrics, val)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    artifact = out / "policy.pt"
    _export(net, family, cfg, metrics, [artifact, *([export] if export else [])])
    return PLALResult(out, artifact, metrics, summary)


def _summary(cfg: PLALConfig, family: OCPFamily, metrics, val) -> dict[str, Any]:
    last = metrics[-1]
    return {
        "algorithm": cfg.algorithm.model_dump(mode="json"),
        "system": family.name,
        "iterations": len(metrics),
        "held_out_problems": int(len(val["cost"])),
        "policy_cost_ratio_median": last["policy_cost_ratio"],
        "policy_cost_ratio_mean": last["policy_cost_ratio_mean"],
        "policy_cost_ratio_p90": last["policy_cost_ratio_p90"],
        "control_error": last["control_error"],
        **{k: last[k] for k in ("final_task_error_median",) if k in last},
        "gain_error": last["gain_error"],
        "dual_residual": last["dual_residual"],
        "sim_calls_total": last["sim_calls_total"],
        "train_s": float(sum(m["iteration_s"] for m in metrics)),
    }


def system_fingerprint(cfg: PLALConfig) -> str:
    """The JSON a toy's task fingerprint hashes: its system section and terminal weight."""
    return json.dumps(
        {
            "system": cfg.system.model_dump(mode="json"),
            "terminal_weight": cfg.problems.terminal_weight,
            "horizon": cfg.problems.horizon,
        },
        sort_keys=True,
    )


def _export(net: PolicyNet, family: OCPFamily, cfg: PLALConfig, metrics, paths) -> None:
    from mpc.value.artifact import TrainedWith

    from ..export import export_policy

    spec_json = system_fingerprint(cfg)
    for path in paths:
        export_policy(
            net,
            path,
            state=family.state_layout(),
            task_params=list(family.task_params),
            task_fingerprint=family.fingerprint(spec_json),
            algorithm=cfg.algorithm.kind,
            trained=TrainedWith(
                dt=family.dt, horizon=cfg.problems.horizon, task_box=family.task_box()
            ),
            iterations=len(metrics),
            samples=int(sum(m["samples"] for m in metrics)),
            notes=f"J(pi)/J* {metrics[-1]['policy_cost_ratio']:.4f} (median, held out)",
        )
