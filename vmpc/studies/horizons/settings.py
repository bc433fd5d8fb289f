"""What the study compares and how: controller specs, the push, defaults, :class:`StudySettings`.

Nothing here runs a simulation; the checks that need no config file happen here, so a bad flag
fails before anything is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mpc.errors import VmpcError

__all__ = [
    "DEFAULT_CONTROLLERS",
    "DEFAULT_REFERENCE",
    "DEFAULT_SEED",
    "DEFAULT_SWEEP_HORIZONS",
    "DEFAULT_SWEEP_TERMINALS",
    "EPISODE_SOURCES",
    "EVAL_STREAM",
    "JOINT_MARGIN_RAD",
    "MAX_DRAWS",
    "MIN_START_DISTANCE_M",
    "VARIANTS",
    "ControllerSpec",
    "PushSetup",
    "TERMINALS",
    "EpisodeSource",
    "StudySettings",
    "parse_controllers",
    "sweep_grid",
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
TERMINALS = ("learned", "quadratic", "none")  # the terminal kinds a controller ends in
DEFAULT_SWEEP_HORIZONS = (2, 3, 5, 10, 20, 50, 100, 200)
DEFAULT_SWEEP_TERMINALS = TERMINALS
# 'held_out': --starts episodes drawn from the eval stream; 'config': one episode, the config's
# own start, target, plant seed and first scheduled push (the demo's run, for `vmpc eval compare`)
EpisodeSource = Literal["held_out", "config"]
EPISODE_SOURCES: tuple[EpisodeSource, ...] = ("held_out", "config")
# learned2 ... learned9 end in the 2nd ... 9th --value: two values side by side in one study.
_LABEL = re.compile(r"^T(\d+)-(learned[2-9]?|quadratic|none)$")


@dataclass(frozen=True)
class ControllerSpec:
    """One compared controller: ``T<horizon>-<terminal>``, terminal learned|quadratic|none, or
    learned2 ... learned9 for the 2nd ... 9th value of a study given several."""

    label: str
    horizon: int  # running knots T
    terminal: str  # 'learned', 'learned2', ..., 'quadratic' or 'none'

    @property
    def value_index(self) -> int | None:
        """Which of the study's values this controller ends in (0: the first), or None."""
        if not self.terminal.startswith("learned"):
            return None
        return int(self.terminal[len("learned") :] or 1) - 1

    def terminal_kind(self, values: Sequence[str]) -> str:
        """``ocp.terminal.kind`` of this controller: its value's path, or the built-in name."""
        i = self.value_index
        return self.terminal if i is None else values[i]

    def overrides(self, values: Sequence[str]) -> list[str]:
        """The ``--set`` strings that select this controller (recorded in horizons.json)."""
        kind = self.terminal_kind(values)
        return [f"ocp.horizon={self.horizon}", f"ocp.terminal.kind={json.dumps(kind)}"]


def parse_controllers(labels: Sequence[str]) -> list[ControllerSpec]:
    """``["T10-learned", "T100-quadratic", ...]`` -> specs; a bad or repeated label is an error."""
    specs: list[ControllerSpec] = []
    for label in labels:
        m = _LABEL.match(label)
        if m is None or int(m.group(1)) <= 0:
            raise VmpcError(
                f"--controllers: '{label}' is not T<horizon>-<learned|quadratic|none> "
                f"(learned2 ... learned9: the 2nd ... 9th --value), e.g. T10-learned"
            )
        if any(s.label == label for s in specs):
            raise VmpcError(f"--controllers: '{label}' is listed twice")
        specs.append(ControllerSpec(label, int(m.group(1)), m.group(2)))
    if not specs:
        raise VmpcError("--controllers: name at least one controller")
    return specs


def sweep_grid(
    horizons: Sequence[int | str], terminals: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    """The controllers of a sweep, every terminal kind at every horizon (grouped by terminal,
    horizons ascending), and its reference: the longest quadratic, else the longest horizon.
    A horizon that is not a positive integer, an unknown terminal kind or a repeat is an error
    (horizons may come as strings, straight from the command line)."""
    hs: list[int] = []
    for h in horizons:
        try:
            n = int(str(h))
        except ValueError:
            n = 0
        if n <= 0:
            raise VmpcError(f"--horizons: '{h}' is not a horizon (a positive number of knots)")
        if n in hs:
            raise VmpcError(f"--horizons: {n} is listed twice")
        hs.append(n)
    for t in terminals:
        if t not in TERMINALS:
            raise VmpcError(f"--terminals: '{t}' is not a terminal kind ({', '.join(TERMINALS)})")
        if list(terminals).count(t) > 1:
            raise VmpcError(f"--terminals: '{t}' is listed twice")
    if not hs or not terminals:
        raise VmpcError("a sweep needs at least one horizon and one terminal kind")
    hs.sort()
    labels = tuple(f"T{h}-{t}" for t in terminals for h in hs)
    longest = "quadratic" if "quadratic" in terminals else terminals[0]
    return labels, f"T{hs[-1]}-{longest}"


@dataclass(frozen=True)
class PushSetup:
    """The push of the 'push' variant: on the EE, direction drawn per episode."""

    force_n: float = 50.0  # magnitude [N]
    duration_s: float = 0.1
    start_s: float | None = None  # None: mid-run


@dataclass(frozen=True)
class StudySettings:
    """Everything ``vmpc eval horizons`` is asked to do (its flags, typed)."""

    config: str | Path  # run config of the task
    value: str | Path  # learned value artifact, used by the *-learned controllers
    more_values: tuple[str | Path, ...] = ()  # the *-learned2, *-learned3, ... controllers
    starts: int = 20  # held-out episodes
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    reference: str | None = None  # None: T100-quadratic if listed, else the longest horizon
    duration_s: float | None = None  # None: run.duration of the config
    replan_every: int = 10  # sim steps between replans, the same for every controller
    variants: tuple[str, ...] = VARIANTS
    push: PushSetup = field(default_factory=PushSetup)
    q_spread_rad: float = 0.3
    workers: int = 2
    seed: int = DEFAULT_SEED
    overrides: tuple[str, ...] = ()  # user --set, applied to every run before the study's own
    episodes: EpisodeSource = "held_out"  # 'config': one episode, the config's own run

    def check(self) -> tuple[list[ControllerSpec], str]:
        """Check what needs no config file; returns the controller specs and the reference."""
        specs = parse_controllers(self.controllers)
        labels = [s.label for s in specs]
        reference = self.reference
        if reference is None:
            reference = (
                DEFAULT_REFERENCE
                if DEFAULT_REFERENCE in labels
                else max(specs, key=lambda s: s.horizon).label
            )
        elif reference not in labels:
            raise VmpcError(f"--reference: '{reference}' is not among the controllers {labels}")
        for s in specs:
            if s.value_index is not None and s.value_index > len(self.more_values):
                raise VmpcError(
                    f"--controllers: {s.label} ends in value {s.value_index + 1}, but "
                    f"--value gives {1 + len(self.more_values)}"
                )
        if self.starts < 1:
            raise VmpcError(f"--starts: need at least 1 episode, got {self.starts}")
        if self.episodes not in EPISODE_SOURCES:
            raise VmpcError(f"episodes must be one of {EPISODE_SOURCES}, got {self.episodes!r}")
        if self.episodes == "config" and self.starts != 1:
            raise VmpcError(f"the config's own episode is one episode, not {self.starts}")
        if self.workers < 1:
            raise VmpcError(f"--workers: need at least 1, got {self.workers}")
        if self.replan_every < 1:
            raise VmpcError(f"--replan-every: need at least 1 sim step, got {self.replan_every}")
        if self.q_spread_rad < 0:
            raise VmpcError(f"--q-spread: must be >= 0, got {self.q_spread_rad}")
        if not self.variants or any(v not in VARIANTS for v in self.variants):
            raise VmpcError(f"variants must be among {VARIANTS}, got {list(self.variants)}")
        if self.push.force_n < 0 or self.push.duration_s <= 0:
            raise VmpcError("--push-force must be >= 0 and --push-duration > 0")
        return specs, reference
