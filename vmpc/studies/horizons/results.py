"""What a study returns, and what ``horizons.json`` holds: :class:`StudyResult` and its parts.

Field names and order are the keys of ``horizons.json``; :meth:`StudyResult.to_json_dict` is the
one place the dataclasses become plain data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .aggregation import Aggregate
from .episodes import Episode
from .running import RunRow
from .settings import PushSetup

__all__ = ["MachineInfo", "ResolvedSettings", "SeedStream", "StudyResult", "ValueInfo"]


@dataclass
class ValueInfo:
    """The learned value the *-learned controllers used."""

    path: str
    model_id: str  # the terminal's label once loaded
    task_params: list[str]
    target_conditioned: bool
    target_box: tuple[list[float], list[float]] | None  # (min, max) trained on, if conditioned
    weights_sha256: str
    algorithm: str


@dataclass
class SeedStream:
    """Where the episodes' random numbers come from."""

    entropy: int
    spawn_key: list[int]
    note: str = "numpy SeedSequence(seed, spawn_key); no trainer uses this key"


@dataclass
class ResolvedSettings:
    """The study's settings once resolved against the config (shared by every run)."""

    duration_s: float
    dt: float  # knot spacing [s]
    replan_every: int  # sim steps
    replan_period_ms: float
    timing: str
    maxiter: int
    variants: list[str]
    push: PushSetup  # start_s resolved
    q_spread_rad: float
    joint_margin_rad: float
    min_start_distance_m: float
    workers: int
    running_cost: dict[str, Any]  # ocp.costs of the config
    episodes: str = "held_out"  # 'held_out' (drawn) or 'config' (the config's own run)


@dataclass
class MachineInfo:
    python: str
    machine: str
    cpus: int | None


@dataclass(kw_only=True)
class StudyResult:
    """One study: settings, episodes, every run and the aggregates (``horizons.json``)."""

    study: str = "vmpc eval horizons"
    date: str
    config: str
    overrides: list[str]  # the user's --set, applied to every run first
    value: ValueInfo
    more_values: list[ValueInfo] = field(default_factory=list)  # *-learned2, *-learned3, ...
    seed: int
    seed_stream: SeedStream
    settings: ResolvedSettings
    controllers: list[str]
    controller_overrides: dict[str, list[str]]  # label -> its --set strings
    reference: str
    episodes: list[Episode]
    runs: list[RunRow]
    aggregates: dict[str, dict[str, Aggregate]]  # variant -> controller -> aggregate
    wall_s: float
    machine: MachineInfo

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data for ``json.dumps``; NaN and inf become None (strict readers reject them)."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
