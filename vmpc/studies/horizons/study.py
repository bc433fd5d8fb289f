"""The study: check the settings and the value, draw the episodes, build every run's config,
run them, aggregate, and write the outputs. :func:`eval_horizons` is the entry point."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from mpc.config import Config, load_config
from mpc.errors import VmpcError
from mpc.loop import ClosedLoop
from mpc.value.artifact import TARGET_PARAMS, ValueMetadata, check_allowed_path, read_metadata
from mpc.value.terminal import value_bases

from .aggregation import add_cost_ratios, aggregate
from .episodes import Episode, config_episode, draw_episodes
from .reporting import write_outputs
from .results import MachineInfo, ResolvedSettings, SeedStream, StudyResult, ValueInfo
from .running import RunJob, run_all, run_config
from .settings import (
    EVAL_STREAM,
    JOINT_MARGIN_RAD,
    MIN_START_DISTANCE_M,
    ControllerSpec,
    PushSetup,
    StudySettings,
)

__all__ = ["eval_horizons"]


def _check_value(cfg: Config, value: str) -> ValueMetadata:
    """Metadata of the value, after the same folder check the loader makes (fails fast):
    relative ``value.allowed_dirs`` resolve against the config file's folder, as they do for
    the loader, whatever the working directory."""
    check_allowed_path(value, cfg.value.allowed_dirs, value_bases(cfg))
    return read_metadata(value)


def eval_horizons(
    settings: StudySettings,
    *,
    out: Path | None = None,
    progress: bool = True,
    plot: bool = True,
) -> StudyResult:
    """Run the study; returns what ``horizons.json`` holds and writes the outputs to ``out``
    (none if ``out`` is None). User errors are :class:`VmpcError`, raised before any run
    starts when they can be."""
    specs, reference = settings.check()
    labels = [s.label for s in specs]
    variants = list(settings.variants)
    config, value = str(settings.config), str(settings.value)
    values = [value, *(str(v) for v in settings.more_values)]
    overrides = list(settings.overrides)
    cfg = load_config(config, overrides)
    duration_s = cfg.run.duration if settings.duration_s is None else float(settings.duration_s)
    if duration_s <= 0:
        raise VmpcError(f"--duration: must be > 0 s, got {duration_s}")
    metas = [_check_value(cfg, v) for v in values]
    for v, m in zip(values, metas, strict=True):
        if m.task_params not in ([], list(TARGET_PARAMS)):
            raise VmpcError(
                f"{v}: task parameters {m.task_params} are not supported here "
                f"(expected none or {list(TARGET_PARAMS)})"
            )
        if m.target_conditioned != metas[0].target_conditioned:
            raise VmpcError(
                f"--value: {v} and {value} differ in target conditioning; the episodes (fixed "
                "or held-out targets) must be the same for every value"
            )
    meta = metas[0]
    conditioned = meta.target_conditioned
    target_box = meta.trained.task_box if conditioned else None
    p = settings.push
    episodes: list[Episode] = []
    if settings.episodes == "config":
        # The config's own run: its start, target, plant seed and first scheduled push.
        episode, config_push = config_episode(cfg)
        if config_push is None and "push" in variants:
            raise VmpcError(
                f"{config}: no scheduled push (disturbances.schedule) to compare under; "
                "add one, or run without it (--no-push)"
            )
        episodes = [episode]
        if config_push is not None:
            p = config_push
    start_s = duration_s / 2 if p.start_s is None else p.start_s
    push = PushSetup(p.force_n, p.duration_s, start_s)
    if "push" in variants and not 0 <= start_s < duration_s:
        raise VmpcError(f"--push-at: {start_s} s is outside the run (0 .. {duration_s} s)")
    if settings.episodes == "held_out":
        episodes = draw_episodes(
            cfg,
            settings.starts,
            target_conditioned=conditioned,
            seed=settings.seed,
            q_spread_rad=settings.q_spread_rad,
            push_force_n=push.force_n,
            target_box=target_box,
        )

    def config_of(ep_index: int, variant: str, spec: ControllerSpec) -> Config:
        return run_config(
            cfg,
            episodes[ep_index],
            variant,
            spec,
            values=values,
            duration_s=duration_s,
            replan_every=settings.replan_every,
            push=push,
        )

    # Validate each value once, as every worker will (folder, integrity, layout, fingerprint,
    # warm-up, call time): a bad file fails here with one line, before any worker starts.
    model_ids = []
    for i in range(len(values)):
        terminal = "learned" if i == 0 else f"learned{i + 1}"
        with ClosedLoop(
            config_of(0, variants[0], ControllerSpec("check", cfg.ocp.horizon, terminal))
        ) as loop:
            model_ids.append(loop.ocp.terminal.label)

    combos = [(ep, variant, spec) for ep in episodes for variant in variants for spec in specs]
    jobs = [
        RunJob(i, ep.index, variant, spec.label, spec.horizon, config_of(ep.index, variant, spec))
        for i, (ep, variant, spec) in enumerate(combos)
    ]
    workers = min(settings.workers, len(jobs))
    t0 = time.perf_counter()
    desc = "eval compare" if settings.episodes == "config" else "eval horizons"
    rows = run_all(jobs, workers, progress, desc)
    wall_s = time.perf_counter() - t0
    add_cost_ratios(rows, reference)

    infos = [
        ValueInfo(
            path=v,
            model_id=mid,
            task_params=m.task_params,
            target_conditioned=conditioned,
            target_box=m.trained.task_box if conditioned else None,
            weights_sha256=m.weights_sha256,
            algorithm=m.provenance.algorithm,
        )
        for v, m, mid in zip(values, metas, model_ids, strict=True)
    ]
    result = StudyResult(
        study="vmpc eval compare" if settings.episodes == "config" else "vmpc eval horizons",
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        config=config,
        overrides=overrides,
        value=infos[0],
        more_values=infos[1:],
        seed=settings.seed,
        seed_stream=SeedStream(entropy=settings.seed, spawn_key=[EVAL_STREAM]),
        settings=ResolvedSettings(
            duration_s=duration_s,
            dt=cfg.ocp.dt,
            replan_every=settings.replan_every,
            replan_period_ms=settings.replan_every * cfg.sim.timestep * 1e3,
            timing="lockstep",
            maxiter=cfg.mpc.maxiter,
            variants=variants,
            push=push,
            q_spread_rad=settings.q_spread_rad,
            joint_margin_rad=JOINT_MARGIN_RAD,
            min_start_distance_m=MIN_START_DISTANCE_M,
            workers=workers,
            running_cost=cfg.ocp.costs.model_dump(mode="json"),
            episodes=settings.episodes,
        ),
        controllers=labels,
        controller_overrides={s.label: s.overrides(values) for s in specs},
        reference=reference,
        episodes=episodes,
        runs=rows,
        aggregates=aggregate(rows, labels, reference),
        wall_s=wall_s,
        machine=MachineInfo(
            python=platform.python_version(),
            machine=platform.machine(),
            cpus=os.cpu_count(),
        ),
    )
    if out is not None:
        write_outputs(result, out, plot=plot)
    return result
