"""The runs: each run's typed config (built in the parent), the worker side, the pool.

The parent builds one :class:`mpc.config.Config` per run (episode x variant x controller) and
sends it in a :class:`RunJob`; a worker builds ``ClosedLoop(cfg)``, runs it and sends back a
:class:`RunRow`. :func:`replay_overrides` spells the same config as ``vmpc sim --set`` strings,
for replaying a run by hand.

Timing is ``lockstep``: trajectories do not depend on how fast a solve was, so they are the same
with 1 or N workers; only the measured solve times vary with machine load.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mpc.config import Config, first_validation_error
from mpc.errors import ConfigError, VmpcError
from mpc.loop import ClosedLoop
from mpc.progress import progress_bar
from sim.specs import PushSpec

from .episodes import Episode
from .settings import ControllerSpec, PushSetup

__all__ = [
    "RunFailure",
    "RunJob",
    "RunRow",
    "replay_overrides",
    "run_all",
    "run_config",
    "run_job",
]


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to run one closed loop; picklable."""

    index: int
    episode: int
    variant: str
    controller: str
    horizon: int  # only to schedule long runs first
    config: Config  # the run's full config, built in the parent


@dataclass
class RunRow:
    """The comparable metrics of one closed-loop run (a row of runs.csv)."""

    run: int
    episode: int
    variant: str
    controller: str
    terminal: str
    horizon: int
    closed_loop_cost: float
    ee_error_final_m: float | None
    ee_error_max_m: float | None
    settle_time_s: float | None
    recovery_time_s: float | None
    peak_deviation_m: float | None
    solve_ms_mean: float
    solve_ms_p50: float
    solve_ms_p99: float
    solve_ms_max: float
    replans: int
    deadline_misses: int
    solver_failures: int
    warm_start_resets: int
    fallback_entries: int
    torque_saturation_steps: int
    wall_s: float
    cost_ratio: float | None = None  # against the reference's run of this episode and variant


@dataclass(frozen=True)
class RunFailure:
    """A run that stopped on a user error (the message; not all errors survive pickling)."""

    run: int
    episode: int
    variant: str
    controller: str
    error: str


# -- one run's config ------------------------------------------------------------------------------
def _push_start(duration_s: float, push: PushSetup) -> float:
    return duration_s / 2 if push.start_s is None else push.start_s


def _assign(section: BaseModel, name: str, value: Any, key: str) -> None:
    """``section.name = value`` (validated); a rejected value is the ConfigError that the same
    ``--set key=value`` would raise."""
    try:
        setattr(section, name, value)
    except ValidationError as exc:
        raise ConfigError(f"--set {key}", key, first_validation_error(exc)[1]) from None


def run_config(
    base: Config,
    ep: Episode,
    variant: str,
    spec: ControllerSpec,
    *,
    values: Sequence[str],
    duration_s: float,
    replan_every: int,
    push: PushSetup,
) -> Config:
    """The config of one run: ``base`` (the config with the user's ``--set``) with the episode,
    the variant and the controller on top. ``robot.q_posture`` is pinned to the base posture,
    since it defaults to q0 and would otherwise change the running cost from episode to
    episode. Equal to ``load_config(path, replay_overrides(...))``."""
    cfg = base.model_copy(deep=True)  # keeps the private source: relative paths still resolve
    schedule: list[PushSpec] = []
    if variant == "push":
        schedule = [
            PushSpec(
                start=_push_start(duration_s, push),
                duration=push.duration_s,
                force=list(ep.push_force),
            )
        ]
    _assign(cfg.robot, "q0", list(ep.q0), "robot.q0")
    _assign(cfg.robot, "q_posture", list(base.robot.posture), "robot.q_posture")
    _assign(cfg.task, "target", list(ep.target), "task.target")
    _assign(cfg.run, "seed", ep.run_seed, "run.seed")
    _assign(cfg.run, "duration", float(duration_s), "run.duration")
    _assign(cfg.mpc, "replan_every", replan_every, "mpc.replan_every")
    _assign(cfg.mpc, "timing", "lockstep", "mpc.timing")  # deterministic trajectories
    _assign(cfg.disturbances, "schedule", schedule, "disturbances.schedule")
    _assign(cfg.disturbances.random, "enabled", False, "disturbances.random.enabled")
    _assign(cfg.value, "swaps", [], "value.swaps")
    _assign(cfg.ocp, "horizon", spec.horizon, "ocp.horizon")
    _assign(cfg.ocp.terminal, "kind", spec.terminal_kind(values), "ocp.terminal.kind")
    return cfg


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


def replay_overrides(
    base: Config,
    ep: Episode,
    variant: str,
    spec: ControllerSpec,
    *,
    values: Sequence[str],
    duration_s: float,
    replan_every: int,
    push: PushSetup,
    user: Sequence[str] = (),
) -> list[str]:
    """The ``vmpc sim --set`` strings of :func:`run_config`: the user's ``--set`` (``user``, the
    ones ``base`` was loaded with) first, the study's last."""
    schedule = "[]"
    if variant == "push":
        schedule = (
            f"[{{start: {_yaml_float(_push_start(duration_s, push))}, "
            f"duration: {_yaml_float(push.duration_s)}, force: {_yaml_list(ep.push_force)}}}]"
        )
    return [
        *user,
        f"robot.q0={_yaml_list(ep.q0)}",
        f"robot.q_posture={_yaml_list(base.robot.posture)}",
        f"task.target={_yaml_list(ep.target)}",
        f"run.seed={ep.run_seed}",
        f"run.duration={_yaml_float(duration_s)}",
        f"mpc.replan_every={replan_every}",
        "mpc.timing=lockstep",
        f"disturbances.schedule={schedule}",
        "disturbances.random.enabled=false",
        "value.swaps=[]",
        *spec.overrides(values),
    ]


# -- one run (in a worker) -------------------------------------------------------------------------
def run_job(job: RunJob) -> RunRow | RunFailure:
    """Build a ClosedLoop, run it, keep the summary's comparable metrics. User errors come back
    as a message: VmpcError subclasses do not all survive pickling across the pool."""
    try:
        with ClosedLoop(job.config) as loop:
            result = loop.run(progress=False)
    except VmpcError as exc:
        return RunFailure(job.index, job.episode, job.variant, job.controller, str(exc))
    s = result.summary
    rec = s.recoveries[0] if s.recoveries else None
    sm = s.solve_ms
    return RunRow(
        run=job.index,
        episode=job.episode,
        variant=job.variant,
        controller=job.controller,
        terminal=s.terminal,
        horizon=s.horizon,
        closed_loop_cost=s.closed_loop_cost,
        ee_error_final_m=s.ee_error_final_m,
        ee_error_max_m=s.ee_error_max_m,
        settle_time_s=s.settle_time_s,
        recovery_time_s=rec.recovery_time_s if rec else None,
        peak_deviation_m=rec.peak_deviation_m if rec else None,
        solve_ms_mean=sm.mean,
        solve_ms_p50=sm.p50,
        solve_ms_p99=sm.p99,
        solve_ms_max=sm.max,
        replans=s.replans,
        deadline_misses=s.deadline_misses,
        solver_failures=s.solver_failures,
        warm_start_resets=s.warm_start_resets,
        fallback_entries=s.fallback_entries,
        torque_saturation_steps=s.torque_saturation_steps,
        wall_s=result.wall_s,
    )


# -- the pool --------------------------------------------------------------------------------------
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


MIN_LINE_RUNS = 20  # fewer runs are quick: no progress lines


class _ProgressLines:
    """Progress when stderr is not a terminal (a pipe, a log file, CI), where the bar stays
    silent: from 20 runs on, one line per tenth of the runs and at least one a minute. The
    time left weighs each run by its horizon (a run's time grows about linearly with T)."""

    def __init__(
        self, jobs: Sequence[RunJob], desc: str, enabled: bool, every_s: float = 60.0
    ) -> None:
        self.total, self.desc, self.every_s = len(jobs), desc, every_s
        self.enabled = enabled and not sys.stderr.isatty() and self.total >= MIN_LINE_RUNS
        self.work = {j.index: _work(j) for j in jobs}
        self.work_total = sum(self.work.values())
        self.done, self.work_done = 0, 0.0
        self.t0 = self.last = time.monotonic()
        self.step = max(1, -(-self.total // 10))

    def update(self, row: RunRow | RunFailure) -> None:
        self.done += 1
        self.work_done += self.work.get(row.run, 0.0)
        now = time.monotonic()
        due = self.done % self.step == 0 or self.done == self.total
        if not self.enabled or not (due or now - self.last >= self.every_s):
            return
        self.last = now
        elapsed = now - self.t0
        left = elapsed * max(0.0, self.work_total - self.work_done) / max(self.work_done, 1e-9)
        print(
            f"{self.desc}: {self.done}/{self.total} runs ({100 * self.done // self.total} %), "
            f"{_duration(elapsed)} elapsed"
            + (f", ~{_duration(left)} left" if self.done < self.total else ""),
            file=sys.stderr,
            flush=True,
        )


def _work(job: RunJob) -> float:
    return job.horizon + 15.0  # ~ a run's time: T=2 ~0.5 s, T=200 ~7 s (4 s runs, 10 ms replans)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def run_all(
    jobs: Sequence[RunJob], workers: int, progress: bool, desc: str = "eval horizons"
) -> list[RunRow]:
    """Run every job, in this process (1 worker) or a spawned pool; rows in job order. The
    first failed run (by index) is raised as a VmpcError naming it. ``progress``: a bar on a
    terminal, else a line on stderr per tenth of the runs (and at least one a minute)."""
    bar = progress_bar(total=len(jobs), desc=desc, unit="run", enabled=progress, leave=True)
    lines = _ProgressLines(jobs, desc, progress)
    done: list[RunRow | RunFailure] = []
    try:
        if workers <= 1:
            for job in jobs:
                done.append(run_job(job))
                bar.update(1)
                lines.update(done[-1])
        else:
            # spawn, not fork: the parent has torch, PyBullet and OpenMP state that forks badly.
            ctx = mp.get_context("spawn")
            with _single_threaded_children():
                pool = ctx.Pool(workers, initializer=_ignore_sigint)
            with pool:
                # Episode by episode, longest first within each: every controller's runs are
                # spread over the whole study, so a change in machine load (other jobs starting
                # or ending) hits all controllers' solve times alike; the pool idles at most
                # one long run at the end. Order is restored below.
                order = sorted(jobs, key=lambda j: (j.episode, -j.horizon, j.index))
                for row in pool.imap_unordered(run_job, order, chunksize=1):
                    done.append(row)
                    bar.update(1)
                    lines.update(row)
    finally:
        bar.close()
    done.sort(key=lambda r: r.run)
    failed = [r for r in done if isinstance(r, RunFailure)]
    if failed:
        f = failed[0]
        raise VmpcError(
            f"run {f.run} (episode {f.episode}, {f.controller}, {f.variant}): {f.error}"
        )
    return [r for r in done if isinstance(r, RunRow)]
