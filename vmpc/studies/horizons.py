"""``vmpc eval horizons``: the closed-loop study behind the headline claim.

A short horizon ending in a learned value should behave like a long horizon with the hand-tuned
quadratic terminal, at a fraction of the compute. This module runs every controller of a list
(``T10-learned``, ``T10-quadratic``, ``T10-none``, ``T100-quadratic``, ``T200-quadratic`` by
default) on the same held-out episodes, with and without a push, and compares them.

What keeps the comparison fair:

* every controller shares the config's running cost, knot spacing ``ocp.dt`` and replan rate, so
  ``closed_loop_cost`` (the running cost integrated over the executed trajectory) compares;
* ``robot.q_posture`` is pinned to the config's posture while ``robot.q0`` moves, because the
  posture defaults to q0 and would otherwise change the running cost (and the value's task
  fingerprint) from episode to episode;
* timing is ``lockstep``: trajectories do not depend on how fast a solve was, so they are the same
  with 1 or N workers; only the measured solve times vary with machine load;
* episodes (starts, targets, push directions, noise seeds) come from an RNG stream of their own
  (``SeedSequence(seed, spawn_key=(EVAL_STREAM,))``) that no trainer draws from, and are stored
  in ``horizons.json`` so any run can be replayed with ``vmpc sim --set ...``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing as mp
import os
import platform
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpc.config import Config, load_config
from mpc.errors import ModelError, VmpcError
from mpc.io import atomic_write_text, save_figure
from mpc.loop import ClosedLoop
from mpc.ocp import QuadraticTerminal, ReachingOCP
from mpc.progress import progress_bar
from mpc.robot_model import build_robot
from mpc.value.artifact import TARGET_PARAMS, check_allowed_path, read_metadata

__all__ = [
    "DEFAULT_CONTROLLERS",
    "DEFAULT_REFERENCE",
    "DEFAULT_SEED",
    "EVAL_STREAM",
    "ControllerSpec",
    "Episode",
    "PushSetup",
    "RunJob",
    "aggregate",
    "draw_episodes",
    "eval_horizons",
    "format_table",
    "parse_controllers",
    "plot_horizons",
]

DEFAULT_CONTROLLERS = (
    "T10-learned",
    "T10-quadratic",
    "T10-none",
    "T100-quadratic",
    "T200-quadratic",
)
DEFAULT_REFERENCE = "T100-quadratic"
DEFAULT_SEED = 20_000  # value fit / trainers default to small seeds; this one is far from them
EVAL_STREAM = 0x65_76_61_6C  # "eval": spawn key of the episode stream, unused by any trainer
JOINT_MARGIN_RAD = 0.1  # starts stay this far inside the joint limits
MIN_START_DISTANCE_M = 0.15  # an episode is a real reach, not a hold at the target
MAX_DRAWS = 10_000  # rejection-sampling budget for the whole episode set
VARIANTS = ("no_push", "push")
_LABEL = re.compile(r"^T(\d+)-(learned|quadratic|none)$")


# -- specifications --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControllerSpec:
    """One compared controller: ``T<horizon>-<terminal>``, terminal learned|quadratic|none."""

    label: str
    horizon: int  # running knots T
    terminal: str  # 'learned', 'quadratic' or 'none'

    def overrides(self, value_path: str) -> list[str]:
        kind = value_path if self.terminal == "learned" else self.terminal
        return [f"ocp.horizon={self.horizon}", f"ocp.terminal.kind={json.dumps(kind)}"]


def parse_controllers(labels: Sequence[str]) -> list[ControllerSpec]:
    """``["T10-learned", "T100-quadratic", ...]`` -> specs; a bad or repeated label is an error."""
    specs: list[ControllerSpec] = []
    for label in labels:
        m = _LABEL.match(label)
        if m is None or int(m.group(1)) <= 0:
            raise VmpcError(
                f"--controllers: '{label}' is not T<horizon>-<learned|quadratic|none>, "
                f"e.g. T10-learned"
            )
        if any(s.label == label for s in specs):
            raise VmpcError(f"--controllers: '{label}' is listed twice")
        specs.append(ControllerSpec(label, int(m.group(1)), m.group(2)))
    if not specs:
        raise VmpcError("--controllers: name at least one controller")
    return specs


@dataclass(frozen=True)
class PushSetup:
    force_n: float = 50.0  # magnitude [N], on the EE, direction drawn per episode
    duration_s: float = 0.1
    start_s: float | None = None  # None: mid-run


@dataclass
class Episode:
    """One held-out problem, shared by every controller and both push variants."""

    index: int
    q0: list[float]  # [rad], zero initial velocity
    target: list[float]  # EE target [m], world
    push_force: list[float]  # [N], world; applied only in the "push" variant
    run_seed: int  # run.seed: measurement-noise and mismatch streams of the plant
    start_ee: list[float]  # EE position at q0 [m], world
    start_distance_m: float  # |start EE - target|


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to run one closed loop; picklable."""

    index: int
    episode: int
    variant: str
    controller: str
    horizon: int  # only to schedule long runs first
    config: str
    overrides: tuple[str, ...]


# -- episodes --------------------------------------------------------------------------------------
def _yaml_float(x: float) -> str:
    """repr(x), spelled so that YAML 1.1 reads it back as this float ('1e-05' is a string)."""
    r = repr(float(x))
    if "e" in r:
        mant, exp = r.split("e")
        if "." not in mant:
            mant += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        r = f"{mant}e{exp}"
    return r


def _yaml_list(xs: Sequence[float]) -> str:
    return "[" + ", ".join(_yaml_float(x) for x in xs) + "]"


def _joint_box(robot: Any) -> tuple[np.ndarray, np.ndarray]:
    # Continuous joints report huge limits: keep starts within +-pi there.
    lo = np.maximum(robot.q_lower, -math.pi) + JOINT_MARGIN_RAD
    hi = np.minimum(robot.q_upper, math.pi) - JOINT_MARGIN_RAD
    return lo, hi


def draw_episodes(
    cfg: Config,
    n: int,
    *,
    target_conditioned: bool,
    seed: int,
    q_spread_rad: float = 0.3,
    push_force_n: float = 50.0,
    target_box: tuple[Sequence[float], Sequence[float]] | None = None,
) -> list[Episode]:
    """``n`` held-out episodes: q0 + U(-q_spread, q_spread) clipped inside the joint limits with
    a margin, zero velocity; a reachable target drawn uniformly in ``task.workspace`` (cut to
    ``target_box``, the box a conditioned value was trained for) when the value is
    target-conditioned, else the config's target; the start EE >= 0.15 m from it; a push
    direction uniform on the sphere and a plant seed.

    A drawn target is kept only if a long-horizon solve (3 s) from the start brings the EE
    within 1 cm of it: the reach-radius test alone admits targets inside the base column or
    beyond the joint limits, which no controller reaches and which then dominate the study."""
    _, robot = build_robot(cfg)
    probe_T = max(1, int(round(3.0 / cfg.ocp.dt)))
    probe = ReachingOCP(
        robot,
        cfg.ocp.model_copy(update={"horizon": probe_T}),
        np.asarray(cfg.task.target, float),
        QuadraticTerminal(cfg.ocp.terminal),
    )

    def feasible(q: np.ndarray, target: np.ndarray) -> bool:
        x0 = np.concatenate([q, np.zeros(robot.nq)])
        probe.set_target(target)
        probe.problem.x0 = x0
        probe.solver.solve([x0] * (probe_T + 1), [robot.gravity_torques(q)] * probe_T, 200, False)
        end = robot.ee_position_world(np.asarray(probe.solver.xs[-1])[: robot.nq])
        return bool(np.linalg.norm(end - target) <= 0.01)

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,)))
    q_nom = np.asarray(cfg.robot.q0, float)
    lo, hi = _joint_box(robot)
    ws_lo, ws_hi = np.asarray(cfg.task.workspace.min), np.asarray(cfg.task.workspace.max)
    if target_box is not None:
        ws_lo = np.maximum(ws_lo, np.asarray(target_box[0], float))
        ws_hi = np.minimum(ws_hi, np.asarray(target_box[1], float))
        if (ws_lo > ws_hi).any():
            raise VmpcError(
                f"{cfg.source}: the value's target box {list(target_box)} does not "
                "overlap task.workspace"
            )
    episodes: list[Episode] = []
    draws = 0
    while len(episodes) < n:
        draws += 1
        if draws > MAX_DRAWS:
            raise VmpcError(
                f"{cfg.source}: could not draw {n} episodes with the start EE >= "
                f"{MIN_START_DISTANCE_M} m from a reachable target in {MAX_DRAWS} "
                f"tries; check task.workspace, robot.q0 and --q-spread"
            )
        q = np.clip(q_nom + rng.uniform(-q_spread_rad, q_spread_rad, q_nom.size), lo, hi)
        q = np.round(q, 6)  # micro-radians: readable records, still exact in the replayed config
        ee = robot.ee_position_world(q)
        if target_conditioned:
            target = np.round(rng.uniform(ws_lo, ws_hi), 6)
            try:
                robot.check_reachable(target)
            except ModelError:
                continue
        else:
            target = np.asarray(cfg.task.target, float)
        dist = float(np.linalg.norm(ee - target))
        if dist < MIN_START_DISTANCE_M:
            continue
        if target_conditioned and not feasible(q, target):
            continue
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        episodes.append(
            Episode(
                index=len(episodes),
                q0=q.tolist(),
                target=target.tolist(),
                push_force=np.round(push_force_n * direction, 6).tolist(),
                run_seed=int(rng.integers(0, 2**31 - 1)),
                start_ee=ee.tolist(),
                start_distance_m=dist,
            )
        )
    return episodes


def _episode_overrides(
    cfg: Config, ep: Episode, variant: str, duration_s: float, replan_every: int, push: PushSetup
) -> list[str]:
    start_s = duration_s / 2 if push.start_s is None else push.start_s
    schedule = "[]"
    if variant == "push":
        schedule = (
            f"[{{start: {_yaml_float(start_s)}, duration: {_yaml_float(push.duration_s)}, "
            f"force: {_yaml_list(ep.push_force)}}}]"
        )
    return [
        f"robot.q0={_yaml_list(ep.q0)}",
        # posture defaults to q0: pin it, so every episode keeps the config's running cost
        f"robot.q_posture={_yaml_list(cfg.robot.posture)}",
        f"task.target={_yaml_list(ep.target)}",
        f"run.seed={ep.run_seed}",
        f"run.duration={_yaml_float(duration_s)}",
        f"mpc.replan_every={replan_every}",
        "mpc.timing=lockstep",  # deterministic trajectories, whatever the machine load
        f"disturbances.schedule={schedule}",
        "disturbances.random.enabled=false",
        "value.swaps=[]",
    ]


# -- one run (in a worker) -------------------------------------------------------------------------
def _run_job(job: RunJob) -> dict[str, Any]:
    """Build a ClosedLoop, run it, keep the summary's comparable metrics. User errors come back
    as a message: VmpcError subclasses do not all survive pickling across the pool."""
    base = {
        "run": job.index,
        "episode": job.episode,
        "variant": job.variant,
        "controller": job.controller,
    }
    try:
        cfg = load_config(job.config, list(job.overrides))
        with ClosedLoop(cfg) as loop:
            result = loop.run(progress=False)
    except VmpcError as exc:
        return {**base, "error": str(exc)}
    s = result.summary
    rec = s.recoveries[0] if s.recoveries else None
    sm = s.solve_ms
    return {
        **base,
        "terminal": s.terminal,
        "horizon": s.horizon,
        "closed_loop_cost": s.closed_loop_cost,
        "ee_error_final_m": s.ee_error_final_m,
        "ee_error_max_m": s.ee_error_max_m,
        "settle_time_s": s.settle_time_s,
        "recovery_time_s": rec.recovery_time_s if rec else None,
        "peak_deviation_m": rec.peak_deviation_m if rec else None,
        "solve_ms_mean": sm.mean,
        "solve_ms_p50": sm.p50,
        "solve_ms_p99": sm.p99,
        "solve_ms_max": sm.max,
        "replans": s.replans,
        "deadline_misses": s.deadline_misses,
        "solver_failures": s.solver_failures,
        "warm_start_resets": s.warm_start_resets,
        "fallback_entries": s.fallback_entries,
        "torque_saturation_steps": s.torque_saturation_steps,
        "wall_s": result.wall_s,
    }


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned workers inherit the environment: one BLAS/OpenMP thread each, so W workers on W
    cores do not oversubscribe and distort the measured solve times."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ignore_sigint() -> None:
    # Ctrl-C is the parent's to handle: it terminates the pool, workers print no tracebacks.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_all(jobs: list[RunJob], workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = progress_bar(
        total=len(jobs), desc="eval horizons", unit="run", enabled=progress, leave=True
    )
    rows: list[dict[str, Any]] = []
    try:
        if workers <= 1:
            for job in jobs:
                rows.append(_run_job(job))
                bar.update(1)
        else:
            # spawn, not fork: the parent has torch, PyBullet and OpenMP state that forks badly.
            ctx = mp.get_context("spawn")
            with _single_threaded_children():
                pool = ctx.Pool(workers, initializer=_ignore_sigint)
            with pool:
                # Longest first (T descending) balances the pool; order is restored below.
                order = sorted(jobs, key=lambda j: -j.horizon)
                for row in pool.imap_unordered(_run_job, order, chunksize=1):
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    rows.sort(key=lambda r: r["run"])
    failed = [r for r in rows if "error" in r]
    if failed:
        r = failed[0]
        raise VmpcError(
            f"run {r['run']} (episode {r['episode']}, {r['controller']}, "
            f"{r['variant']}): {r['error']}"
        )
    return rows


# -- aggregation -----------------------------------------------------------------------------------
def _finite(xs: Sequence[Any]) -> np.ndarray:
    a = np.array([x for x in xs if x is not None], dtype=float)
    return a[np.isfinite(a)]


def _stat(xs: Sequence[Any], fn: str, q: float = 50.0) -> float | None:
    a = _finite(xs)
    if a.size == 0:
        return None
    if fn == "mean":
        return float(a.mean())
    if fn == "max":
        return float(a.max())
    return float(np.percentile(a, q))


def aggregate(
    rows: Sequence[dict[str, Any]], controllers: Sequence[str], reference: str | None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant ('no_push', 'push') and controller. Cost ratios are taken per episode against
    the reference controller's run of the same episode and variant, then averaged. Spreads are
    the 10th and 90th percentiles over runs. Runs that never settled or recovered are counted,
    not averaged."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in VARIANTS:
        vrows = [r for r in rows if r["variant"] == variant]
        if not vrows:
            continue
        ref_cost = {
            r["episode"]: r["closed_loop_cost"] for r in vrows if r["controller"] == reference
        }
        per: dict[str, dict[str, Any]] = {}
        for label in controllers:
            rs = [r for r in vrows if r["controller"] == label]
            if not rs:
                continue
            ratios = [
                r["closed_loop_cost"] / ref_cost[r["episode"]]
                for r in rs
                if ref_cost.get(r["episode"]) and r["closed_loop_cost"] is not None
            ]
            cost = [r["closed_loop_cost"] for r in rs]
            p50 = [r["solve_ms_p50"] for r in rs]
            settle = [r["settle_time_s"] for r in rs]
            a: dict[str, Any] = {
                "runs": len(rs),
                "cost_mean": _stat(cost, "mean"),
                "cost_median": _stat(cost, "pct", 50),
                "cost_ratio_mean": _stat(ratios, "mean"),
                "cost_ratio_median": _stat(ratios, "pct", 50),
                "cost_ratio_p10": _stat(ratios, "pct", 10),
                "cost_ratio_p90": _stat(ratios, "pct", 90),
                "ee_error_final_mean_m": _stat([r["ee_error_final_m"] for r in rs], "mean"),
                "ee_error_final_median_m": _stat([r["ee_error_final_m"] for r in rs], "pct", 50),
                "settle_time_mean_s": _stat(settle, "mean"),
                "never_settled": sum(s is None for s in settle),
                "recovery_time_mean_s": None,
                "never_recovered": None,
                "solve_ms_mean": _stat([r["solve_ms_mean"] for r in rs], "mean"),
                "solve_ms_p50_mean": _stat(p50, "mean"),
                "solve_ms_p50_p10": _stat(p50, "pct", 10),
                "solve_ms_p50_p90": _stat(p50, "pct", 90),
                "solve_ms_p99_max": _stat([r["solve_ms_p99"] for r in rs], "max"),
                "speedup_vs_reference": None,
                "deadline_misses": sum(int(r["deadline_misses"]) for r in rs),
                "replans": sum(int(r["replans"]) for r in rs),
                "solver_failures": sum(int(r["solver_failures"]) for r in rs),
            }
            if variant == "push":
                rec = [r["recovery_time_s"] for r in rs]
                a["recovery_time_mean_s"] = _stat(rec, "mean")
                a["never_recovered"] = sum(x is None for x in rec)
            per[label] = a
        ref = per.get(reference or "")
        if ref is not None and ref["solve_ms_p50_mean"]:
            for a in per.values():
                if a["solve_ms_p50_mean"]:
                    a["speedup_vs_reference"] = ref["solve_ms_p50_mean"] / a["solve_ms_p50_mean"]
        out[variant] = per
    return out


# -- reporting -------------------------------------------------------------------------------------
def _f(x: Any, fmt: str, scale: float = 1.0, none: str = "-") -> str:
    if x is None:
        return none
    return format(x if scale == 1.0 else x * scale, fmt)


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: one block per variant, one line per controller."""
    s = result["settings"]
    ref = result["reference"]
    lines = [
        f"vmpc eval horizons: {len(result['episodes'])} held-out episodes x "
        f"{len(s['variants'])} variant(s) x {len(result['controllers'])} controllers "
        f"= {len(result['runs'])} runs",
        f"  value {result['value']['path']} ({result['value']['model_id']}), "
        f"{'target-conditioned' if result['value']['target_conditioned'] else 'fixed target'}",
        f"  dt {s['dt']} s, replan every {s['replan_every']} sim steps "
        f"({s['replan_period_ms']:g} ms, lockstep), {s['duration_s']:g} s per run, "
        f"seed {result['seed']}, {s['workers']} worker(s)",
    ]
    head = (
        f"  {'controller':<16}{'cost mean':>10}{'/ref mean':>10}{'/ref med':>9}"
        f"{'final mm':>9}{'settle s':>9}{'(never)':>8}{'recov s':>8}{'(never)':>8}"
        f"{'solve p50':>11}{'speed-up':>9}{'misses':>8}{'fails':>6}"
    )
    for variant, per in result["aggregates"].items():
        title = (
            "without push"
            if variant == "no_push"
            else (
                f"with push ({s['push']['force_n']:g} N for {s['push']['duration_s']:g} s "
                f"at {s['push']['start_s']:g} s)"
            )
        )
        lines += ["", f"{title}; ratios against {ref or '(no reference)'}", head]
        for label, a in per.items():
            lines.append(
                f"  {label:<16}{_f(a['cost_mean'], '.4g'):>10}"
                f"{_f(a['cost_ratio_mean'], '.4f'):>10}{_f(a['cost_ratio_median'], '.4f'):>9}"
                f"{_f(a['ee_error_final_mean_m'], '.3f', 1e3):>9}"
                f"{_f(a['settle_time_mean_s'], '.3f'):>9}{a['never_settled']:>8}"
                f"{_f(a['recovery_time_mean_s'], '.3f'):>8}"
                f"{_f(a['never_recovered'], 'd'):>8}"
                f"{_f(a['solve_ms_p50_mean'], '.3f'):>8} ms"
                f"{_f(a['speedup_vs_reference'], '.2f'):>8}x"
                f"{a['deadline_misses']:>8}{a['solver_failures']:>6}"
            )
    lines += [
        "",
        "  cost: running cost integrated over the executed trajectory (same for all); "
        "/ref: per-episode ratio to the reference, averaged; solve p50: per-run median "
        "solve time per replan, averaged; speed-up: reference solve p50 / this one",
    ]
    return "\n".join(lines)


RUN_COLUMNS = (
    "run",
    "episode",
    "variant",
    "controller",
    "horizon",
    "terminal",
    "closed_loop_cost",
    "cost_ratio",
    "ee_error_final_m",
    "ee_error_max_m",
    "settle_time_s",
    "recovery_time_s",
    "peak_deviation_m",
    "solve_ms_mean",
    "solve_ms_p50",
    "solve_ms_p99",
    "solve_ms_max",
    "replans",
    "deadline_misses",
    "solver_failures",
    "warm_start_resets",
    "fallback_entries",
    "torque_saturation_steps",
    "wall_s",
)


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def _aggregate_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"variant": v, "controller": label, **a}
        for v, per in result["aggregates"].items()
        for label, a in per.items()
    ]


def plot_horizons(result: dict[str, Any], path: Path) -> Path:
    """Closed-loop cost relative to the reference against solve time per replan (log x): one
    marker per controller at the means, bars from the 10th to the 90th percentile over runs;
    one panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aggs = result["aggregates"]
    ref = result["reference"]
    fig, axes = plt.subplots(1, len(aggs), figsize=(5.5 * len(aggs), 4.5), squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(result["controllers"])}
    for ax, (variant, per) in zip(axes[0], aggs.items(), strict=False):
        use_ratio = ref is not None and ref in per
        for label, a in per.items():
            x, y = a["solve_ms_p50_mean"], a["cost_ratio_mean" if use_ratio else "cost_mean"]
            if x is None or y is None:
                continue
            c = colors[label]
            ax.plot([x], [y], "o", color=c, ms=8, label=label, zorder=3)
            if a["solve_ms_p50_p10"] is not None:
                ax.plot(
                    [a["solve_ms_p50_p10"], a["solve_ms_p50_p90"]], [y, y], "-", color=c, lw=1.5
                )
            if use_ratio and a["cost_ratio_p10"] is not None:
                ax.plot([x, x], [a["cost_ratio_p10"], a["cost_ratio_p90"]], "-", color=c, lw=1.5)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if use_ratio:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.axhline(1.02, color="tab:green", lw=0.8, ls=":", label="+2%")
        ax.set_xscale("log")
        ax.set_xlabel("solve time per replan, p50 [ms] (log)")
        ax.set_ylabel(f"closed-loop cost / {ref}" if use_ratio else "closed-loop cost")
        ax.set_title("without push" if variant == "no_push" else "with push")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{len(result['episodes'])} held-out episodes; markers: means, bars: 10th-90th percentile",
        fontsize=9,
    )
    return save_figure(fig, path)


# -- the study -------------------------------------------------------------------------------------
def _check_value(cfg: Config, value: str) -> Any:
    """Metadata of the value, after the same folder check the loader makes (fails fast)."""
    check_allowed_path(value, cfg.value.allowed_dirs)
    return read_metadata(value)


def eval_horizons(
    config: str | Path,
    value: str | Path,
    *,
    starts: int = 20,
    controllers: Sequence[str] = DEFAULT_CONTROLLERS,
    reference: str | None = None,
    duration_s: float | None = None,
    replan_every: int = 10,
    variants: Sequence[str] = VARIANTS,
    push: PushSetup = PushSetup(),
    q_spread_rad: float = 0.3,
    workers: int = 2,
    seed: int = DEFAULT_SEED,
    out: Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    plot: bool = True,
) -> dict[str, Any]:
    """Run the study; returns what ``horizons.json`` holds and writes the outputs to ``out``
    (none if ``out`` is None). ``reference`` defaults to T100-quadratic when listed, else to the
    longest-horizon controller."""
    specs = parse_controllers(controllers)
    labels = [s.label for s in specs]
    if reference is None:
        reference = (
            DEFAULT_REFERENCE
            if DEFAULT_REFERENCE in labels
            else max(specs, key=lambda s: s.horizon).label
        )
    elif reference not in labels:
        raise VmpcError(f"--reference: '{reference}' is not among the controllers {labels}")
    if starts < 1:
        raise VmpcError(f"--starts: need at least 1 episode, got {starts}")
    if workers < 1:
        raise VmpcError(f"--workers: need at least 1, got {workers}")
    if replan_every < 1:
        raise VmpcError(f"--replan-every: need at least 1 sim step, got {replan_every}")
    if q_spread_rad < 0:
        raise VmpcError(f"--q-spread: must be >= 0, got {q_spread_rad}")
    if not variants or any(v not in VARIANTS for v in variants):
        raise VmpcError(f"variants must be among {VARIANTS}, got {list(variants)}")
    if push.force_n < 0 or push.duration_s <= 0:
        raise VmpcError("--push-force must be >= 0 and --push-duration > 0")

    config, value = str(config), str(value)
    cfg = load_config(config, list(overrides))
    duration_s = cfg.run.duration if duration_s is None else float(duration_s)
    if duration_s <= 0:
        raise VmpcError(f"--duration: must be > 0 s, got {duration_s}")
    push = PushSetup(
        push.force_n, push.duration_s, duration_s / 2 if push.start_s is None else push.start_s
    )
    if "push" in variants and not 0 <= push.start_s < duration_s:
        raise VmpcError(f"--push-at: {push.start_s} s is outside the run (0 .. {duration_s} s)")

    meta = _check_value(cfg, value)
    if meta.task_params not in ([], list(TARGET_PARAMS)):
        raise VmpcError(
            f"{value}: task parameters {meta.task_params} are not supported here "
            f"(expected none or {list(TARGET_PARAMS)})"
        )
    conditioned = meta.task_params == list(TARGET_PARAMS)
    target_box = meta.trained.task_box if conditioned else None
    episodes = draw_episodes(
        cfg,
        starts,
        target_conditioned=conditioned,
        seed=seed,
        q_spread_rad=q_spread_rad,
        push_force_n=push.force_n,
        target_box=target_box,
    )

    def run_overrides(ep: Episode, variant: str, spec: ControllerSpec) -> tuple[str, ...]:
        # User --set first, ours last: the study's settings and the controller's win.
        return (
            *overrides,
            *_episode_overrides(cfg, ep, variant, duration_s, replan_every, push),
            *spec.overrides(value),
        )

    # Validate the value once, as every worker will (folder, integrity, layout, fingerprint,
    # warm-up, call time): a bad file fails here with one line, before any worker starts.
    learned = next(
        (s for s in specs if s.terminal == "learned"),
        ControllerSpec("check", cfg.ocp.horizon, "learned"),
    )
    with ClosedLoop(
        load_config(config, list(run_overrides(episodes[0], variants[0], learned)))
    ) as loop:
        model_id = loop.ocp.terminal.label

    combos = [(ep, variant, spec) for ep in episodes for variant in variants for spec in specs]
    jobs = [
        RunJob(
            i, ep.index, variant, spec.label, spec.horizon, config, run_overrides(ep, variant, spec)
        )
        for i, (ep, variant, spec) in enumerate(combos)
    ]
    workers = min(workers, len(jobs))
    t0 = time.perf_counter()
    rows = _run_all(jobs, workers, progress)
    wall_s = time.perf_counter() - t0

    ref_cost = {
        (r["episode"], r["variant"]): r["closed_loop_cost"]
        for r in rows
        if r["controller"] == reference
    }
    for r in rows:
        rc = ref_cost.get((r["episode"], r["variant"]))
        r["cost_ratio"] = r["closed_loop_cost"] / rc if rc else None
    result: dict[str, Any] = {
        "study": "vmpc eval horizons",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": config,
        "overrides": list(overrides),
        "value": {
            "path": value,
            "model_id": model_id,
            "task_params": meta.task_params,
            "target_conditioned": conditioned,
            "target_box": target_box,
            "weights_sha256": meta.weights_sha256,
            "algorithm": meta.provenance.algorithm,
        },
        "seed": seed,
        "seed_stream": {
            "entropy": seed,
            "spawn_key": [EVAL_STREAM],
            "note": "numpy SeedSequence(seed, spawn_key); no trainer uses this key",
        },
        "settings": {
            "duration_s": duration_s,
            "dt": cfg.ocp.dt,
            "replan_every": replan_every,
            "replan_period_ms": replan_every * cfg.sim.timestep * 1e3,
            "timing": "lockstep",
            "maxiter": cfg.mpc.maxiter,
            "variants": list(variants),
            "push": asdict(push),
            "q_spread_rad": q_spread_rad,
            "joint_margin_rad": JOINT_MARGIN_RAD,
            "min_start_distance_m": MIN_START_DISTANCE_M,
            "workers": workers,
            "running_cost": cfg.ocp.costs.model_dump(mode="json"),
        },
        "controllers": labels,
        "controller_overrides": {s.label: s.overrides(value) for s in specs},
        "reference": reference,
        "episodes": [asdict(ep) for ep in episodes],
        "runs": rows,
        "aggregates": aggregate(rows, labels, reference),
        "wall_s": wall_s,
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "horizons.json", json.dumps(_jsonable(result), indent=2) + "\n")
        agg_rows = _aggregate_rows(result)
        atomic_write_text(out / "horizons.csv", _csv(agg_rows, list(agg_rows[0])))
        atomic_write_text(out / "runs.csv", _csv(rows, RUN_COLUMNS))
        if plot:
            plot_horizons(result, out / "horizons.png")
    return result


def _jsonable(x: Any) -> Any:
    """NaN and inf become null: strict JSON readers reject them."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
