"""``vmpc eval warmstart``: how many solver iterations a policy's rollout saves as the initial
guess of trajectory optimisation (Le Lidec et al., Fig. 7).

On held-out problems of a policy config (a seed no training run used), each OCP is solved twice
by BoxFDDP to the same tolerance: from the usual still guess (x0 held, zero or gravity-holding
controls) and from the closed-loop rollout of the policy. Reported: the iteration counts
(median, p90, max, how many need more than 100), failures, and the cost each start converges
to (a warm start can also change the local optimum found, paper Fig. 6).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learning.executors import ExecutorSpec, make_executor
from learning.plal.config import PLALConfig
from learning.plal.oc_phase import (
    OCJob,
    OCResult,
    Rollouts,
    build_worker,
    run_job,
    worker_context,
)
from learning.plal.systems import OCPFamily, make_family
from learning.plal.trainer import still_job, system_fingerprint
from mpc.errors import VmpcError
from mpc.io import atomic_write_text, save_figure
from mpc.policy.artifact import PolicyModel
from mpc.progress import progress_bar

__all__ = [
    "SwitchResult",
    "SwitchRow",
    "WarmstartResult",
    "WarmstartStats",
    "check_policy_fits",
    "format_switches",
    "format_warmstart",
    "loop_switch_study",
    "warmstart_study",
    "write_warmstart",
]

DEFAULT_SEED = 424242  # not a training (0...) nor a validation (987654) seed


@dataclass
class WarmstartStats:
    median: float
    p90: float
    max: int
    over_100: int
    failed: int
    cost_mean: float


@dataclass
class WarmstartResult:
    problems: int
    tolerance: float
    maxiter: int
    still: WarmstartStats
    policy: WarmstartStats
    median_speedup: float  # median of per-problem still / policy iteration ratios
    iterations_still: list[int]
    iterations_policy: list[int]


def _stats(res: list[OCResult]) -> WarmstartStats:
    its = np.array([r.iterations if r.ok else np.nan for r in res], dtype=float)
    ok = np.isfinite(its)
    costs = np.array([r.cost for r in res if r.ok])
    return WarmstartStats(
        median=float(np.median(its[ok])) if ok.any() else float("nan"),
        p90=float(np.quantile(its[ok], 0.9)) if ok.any() else float("nan"),
        max=int(np.max(its[ok])) if ok.any() else 0,
        over_100=int((its[ok] > 100).sum()),
        failed=int((~ok).sum()),
        cost_mean=float(costs.mean()) if len(costs) else float("nan"),
    )


def check_policy_fits(policy: PolicyModel, cfg: PLALConfig, family: OCPFamily) -> None:
    """One line when the policy was trained for another system or task than the config's
    (``family``: the config's)."""
    meta = policy.metadata
    if meta.state.nx != family.nx or meta.architecture.nu != family.nu:
        raise VmpcError(
            f"{policy.path}: a policy for nx={meta.state.nx}, nu={meta.architecture.nu}; the "
            f"config's {family.name} has nx={family.nx}, nu={family.nu}"
        )
    want = family.fingerprint(system_fingerprint(cfg))
    if meta.task_fingerprint != want:
        raise VmpcError(
            f"{policy.path}: task fingerprint {meta.task_fingerprint[:19]}... is not the config's "
            f"{want[:19]}... (trained for another system or task)"
        )


def warmstart_study(
    cfg: PLALConfig,
    policy: PolicyModel,
    problems: int = 100,
    tolerance: float = 1e-6,
    maxiter: int = 500,
    seed: int = DEFAULT_SEED,
    executor: ExecutorSpec | None = None,
    progress: bool = True,
) -> WarmstartResult:
    family = make_family(cfg.system, cfg.problems.terminal_weight)
    check_policy_fits(policy, cfg, family)
    T = cfg.problems.horizon
    rows = family.sample(problems, np.random.default_rng(seed))
    r_xs, r_us, _ = Rollouts(family, T).run(policy.evaluator(), rows)
    # A diverged rollout is no guess at all: it falls back to the still guess (and counts).
    bad = ~(np.isfinite(r_xs).all(axis=(1, 2)) & np.isfinite(r_us).all(axis=(1, 2)))
    still = still_job(family, rows, T, maxiter)
    still.th_stop = tolerance
    warm = OCJob(
        T, maxiter, True, "none", 0.0, rows,
        np.where(bad[:, None, None], still.guess_xs, r_xs),
        np.where(bad[:, None, None], still.guess_us, r_us),
        th_stop=tolerance,
    )  # fmt: skip
    out: dict[str, list[OCResult]] = {}
    with make_executor(executor or cfg.executor, build_worker, worker_context(cfg)) as ex:
        for name, job in (("still", still), ("policy", warm)):
            with progress_bar(total=len(rows), desc=f"from {name}", enabled=progress) as bar:
                out[name] = run_job(ex, job, bar.update)
    its_s = [r.iterations for r in out["still"]]
    its_p = [r.iterations for r in out["policy"]]
    both = [
        s.iterations / max(p.iterations, 1)
        for s, p in zip(out["still"], out["policy"], strict=True)
        if s.ok and p.ok
    ]
    return WarmstartResult(
        problems=len(rows),
        tolerance=tolerance,
        maxiter=maxiter,
        still=_stats(out["still"]),
        policy=_stats(out["policy"]),
        median_speedup=float(np.median(both)) if both else float("nan"),
        iterations_still=its_s,
        iterations_policy=its_p,
    )


def format_warmstart(res: WarmstartResult) -> str:
    head = f"{'initial guess':<16}{'median':>8}{'p90':>8}{'max':>6}{'>100':>6}{'failed':>8}"
    lines = [
        f"{res.problems} held-out problems, BoxFDDP to tolerance {res.tolerance:g} "
        f"(at most {res.maxiter} iterations)",
        head + f"{'mean cost':>12}",
    ]
    for name, s in (("still", res.still), ("policy rollout", res.policy)):
        lines.append(
            f"{name:<16}{s.median:>8.1f}{s.p90:>8.1f}{s.max:>6}{s.over_100:>6}{s.failed:>8}"
            f"{s.cost_mean:>12.4g}"
        )
    lines.append(
        f"median per-problem speed-up (still / policy iterations): {res.median_speedup:.2f}x"
    )
    return "\n".join(lines)


def write_warmstart(res: WarmstartResult, out: Path, title: str) -> None:
    """warmstart.json and warmstart.png (the histogram of Fig. 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "warmstart.json", json.dumps(asdict(res), indent=1))
    top = max(max(res.iterations_still), max(res.iterations_policy), 1)
    bins = np.linspace(0, top + 1, min(40, top + 2)).tolist()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist(res.iterations_still, bins=bins, alpha=0.6, label="still guess")
    ax.hist(res.iterations_policy, bins=bins, alpha=0.6, label="policy rollout")
    ax.set_xlabel(f"solver iterations to tolerance {res.tolerance:g}")
    ax.set_ylabel("problems")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, out / "warmstart.png", dpi=90)


# -- in the loop: target switches ------------------------------------------------------------
@dataclass
class SwitchRow:
    switch: int
    distance_m: float  # [m] old target to new
    warm_start: str  # shift | policy
    window_cost: float  # running cost integrated over the window after the switch
    window_iterations: int  # solver iterations summed over the replans in the window
    final_error_m: float  # [m] EE to the new target at the end of the window
    policy_warm_starts: int
    policy_warm_start_failures: int


@dataclass
class SwitchResult:
    rows: list[SwitchRow]
    horizon: int
    maxiter: int
    window_s: float
    cost_ratio_median: float  # median over switches of policy / shift window cost
    iterations_ratio_median: float  # median over switches of policy / shift window iterations


def _switch_targets(cfg: Any, n: int, distance: float, box: Any, seed: int) -> list[np.ndarray]:
    """n targets at least ``distance`` from the config's, inside ``box`` (the policy's trained
    target box, else the workspace) and well inside the arm's reach."""
    from mpc.robot_model import build_robot

    _, robot = build_robot(cfg)
    origin, radius = robot.reach()
    lo, hi = (np.asarray(b, float) for b in box)
    start = np.asarray(cfg.task.target, float)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(10000):
        if len(out) == n:
            break
        t = rng.uniform(lo, hi)
        if np.linalg.norm(t - start) >= distance and np.linalg.norm(t - origin) <= 0.8 * radius:
            out.append(t)
    if len(out) < n:
        raise VmpcError(f"no {n} targets {distance} m from {start.tolist()} inside {box}")
    return out


def loop_switch_study(
    config: str | Path,
    policy_path: str | Path,
    switches: int = 10,
    horizon: int = 10,
    maxiter: int = 10,
    distance_m: float = 0.2,
    settle_s: float = 1.0,
    window_s: float = 0.5,
    seed: int = DEFAULT_SEED,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> SwitchResult:
    """The closed loop of ``config`` at T=``horizon`` settles on its target for ``settle_s``,
    then the target jumps >= ``distance_m``; the ``window_s`` after it are scored, once with the
    shifted warm start and once starting from the policy's rollout (same switches)."""
    from mpc.config import load_config
    from mpc.loop import ClosedLoop

    policy_path = Path(policy_path).resolve()
    base = load_config(
        config,
        [
            *(overrides or []),
            f"ocp.horizon={horizon}",
            f"mpc.maxiter={maxiter}",
            f"run.duration={settle_s + window_s}",
            "disturbances.schedule=[]",
            f"value.allowed_dirs=[{policy_path.parent}]",
        ],
    )
    from mpc.policy.artifact import load_policy_model

    meta = load_policy_model(policy_path, [policy_path.parent]).metadata
    box = meta.trained.task_box or (base.task.workspace.min, base.task.workspace.max)
    targets = _switch_targets(base, switches, distance_m, box, seed)
    rows: list[SwitchRow] = []
    total = 2 * len(targets)
    with progress_bar(total=total, desc="target switches", unit="run", enabled=progress) as bar:
        for i, target in enumerate(targets):
            for kind in ("shift", "policy"):
                ws = {"kind": kind, "path": str(policy_path) if kind == "policy" else None}
                moves = [{"t": settle_s, "target": target.tolist()}]
                data = base.model_dump(mode="json")
                data["mpc"]["warm_start"] = ws
                data["task"]["target_changes"] = moves
                cfg = type(base).model_validate(data)
                cfg._source = base.source
                with ClosedLoop(cfg) as loop:
                    res = loop.run(progress=False)
                    rows.append(_score(loop, res, i, target, kind, settle_s))
                bar.update(1)
    by = {(r.switch, r.warm_start): r for r in rows}
    cost = [
        by[(i, "policy")].window_cost / by[(i, "shift")].window_cost for i in range(len(targets))
    ]
    its = [
        by[(i, "policy")].window_iterations / max(by[(i, "shift")].window_iterations, 1)
        for i in range(len(targets))
    ]
    return SwitchResult(
        rows, horizon, maxiter, window_s, float(np.median(cost)), float(np.median(its))
    )


def _score(loop: Any, res: Any, i: int, target: np.ndarray, kind: str, t0: float) -> SwitchRow:
    a = res.log.arrays()
    sel = a["t"] >= t0 - 1e-12
    x = np.hstack([a["q"], a["v"]])[sel]
    cost = loop.ocp.running_cost_evaluator().integrate(
        x, a["tau"][sel], a["target"][sel], loop.arm.dt
    )
    n = res.log.replans
    rep = res.log.replan_t[:n] >= t0 - 1e-12
    err = np.linalg.norm(a["ee_position"][-1] - target)
    s = res.summary
    return SwitchRow(
        switch=i,
        distance_m=float(np.linalg.norm(a["target"][0] - target)),
        warm_start=kind,
        window_cost=float(cost),
        window_iterations=int(res.log.iterations[:n][rep].sum()),
        final_error_m=float(err),
        policy_warm_starts=s.policy_warm_starts,
        policy_warm_start_failures=s.policy_warm_start_failures,
    )


def format_switches(res: SwitchResult) -> str:
    lines = [
        f"{len(res.rows) // 2} target switches, T={res.horizon}, {res.maxiter} FDDP iterations "
        f"per replan at most, scored over {res.window_s} s after each switch",
        f"{'switch':>6}{'dist [m]':>10}{'cost shift':>12}{'cost policy':>13}"
        f"{'iters shift':>13}{'iters policy':>14}{'err shift':>11}{'err policy':>12}"
        f"{'policy starts/fallbacks':>25}",
    ]
    by = {(r.switch, r.warm_start): r for r in res.rows}
    for i in sorted({r.switch for r in res.rows}):
        s, p = by[(i, "shift")], by[(i, "policy")]
        lines.append(
            f"{i:>6}{s.distance_m:>10.3f}{s.window_cost:>12.4g}{p.window_cost:>13.4g}"
            f"{s.window_iterations:>13}{p.window_iterations:>14}"
            f"{s.final_error_m * 1e3:>9.1f}mm{p.final_error_m * 1e3:>10.1f}mm"
            f"{p.policy_warm_starts:>20}/{p.policy_warm_start_failures}"
        )
    lines.append(
        f"median policy/shift: cost {res.cost_ratio_median:.3f}, solver iterations "
        f"{res.iterations_ratio_median:.3f}"
    )
    return "\n".join(lines)
