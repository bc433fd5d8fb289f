"""``vmpc eval horizons``: the closed-loop study behind the headline claim.

A short horizon ending in a learned value should behave like a long horizon with the hand-tuned
quadratic terminal, at a fraction of the compute. This package runs every controller of a list
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

Modules, by job: :mod:`.settings` (controller specs, the push, defaults, :class:`StudySettings`),
:mod:`.episodes` (drawing the held-out episodes), :mod:`.running` (each run's config, the worker
side, the pool), :mod:`.aggregation` (cost ratios, per-controller aggregates), :mod:`.results`
(:class:`StudyResult`, what ``horizons.json`` holds), :mod:`.reporting` (table, CSVs, JSON,
plot) and :mod:`.study` (:func:`eval_horizons`, the orchestration). Two presets of the same study:
:mod:`.sweep` (``--sweep``: every terminal kind at every horizon, the Pareto picture) and
:mod:`.compare` (``vmpc eval compare``: a few controllers on the config's own run, side by side).
"""

from __future__ import annotations

from .aggregation import Aggregate, add_cost_ratios, aggregate
from .compare import COMPARE_CONTROLLERS, COMPARE_REFERENCE, format_compare
from .episodes import Episode, config_episode, draw_episodes
from .reporting import RUN_COLUMNS, format_table, plot_horizons, write_outputs
from .results import MachineInfo, ResolvedSettings, SeedStream, StudyResult, ValueInfo
from .running import RunFailure, RunJob, RunRow, replay_overrides, run_config
from .settings import (
    DEFAULT_CONTROLLERS,
    DEFAULT_REFERENCE,
    DEFAULT_SEED,
    DEFAULT_SWEEP_HORIZONS,
    DEFAULT_SWEEP_TERMINALS,
    EVAL_STREAM,
    TERMINALS,
    VARIANTS,
    ControllerSpec,
    PushSetup,
    StudySettings,
    parse_controllers,
    sweep_grid,
)
from .study import eval_horizons
from .sweep import (
    SweepPoint,
    SweepResult,
    eval_sweep,
    format_sweep_table,
    plot_sweep,
    read_sweep,
    sweep_of,
    write_sweep_outputs,
)

__all__ = [
    "COMPARE_CONTROLLERS",
    "COMPARE_REFERENCE",
    "DEFAULT_CONTROLLERS",
    "DEFAULT_REFERENCE",
    "DEFAULT_SEED",
    "DEFAULT_SWEEP_HORIZONS",
    "DEFAULT_SWEEP_TERMINALS",
    "EVAL_STREAM",
    "RUN_COLUMNS",
    "TERMINALS",
    "VARIANTS",
    "Aggregate",
    "ControllerSpec",
    "Episode",
    "MachineInfo",
    "PushSetup",
    "ResolvedSettings",
    "RunFailure",
    "RunJob",
    "RunRow",
    "SeedStream",
    "StudyResult",
    "StudySettings",
    "SweepPoint",
    "SweepResult",
    "ValueInfo",
    "add_cost_ratios",
    "aggregate",
    "config_episode",
    "draw_episodes",
    "eval_horizons",
    "eval_sweep",
    "format_compare",
    "format_sweep_table",
    "format_table",
    "parse_controllers",
    "plot_horizons",
    "plot_sweep",
    "read_sweep",
    "replay_overrides",
    "run_config",
    "sweep_grid",
    "sweep_of",
    "write_outputs",
    "write_sweep_outputs",
]
