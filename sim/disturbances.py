"""External pushes: a schedule from the config, seeded random pushes, and pushes added live.

Time is sim time [s]. Forces [N] and torques [N m] are in the world frame.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from .specs import DisturbanceSpec, PushSpec, RandomPushSpec

__all__ = ["Push", "Disturbances", "sample_random_pushes"]


@dataclass(frozen=True)
class Push:
    start: float  # [s]
    duration: float  # [s]
    link: int
    force: np.ndarray = field(repr=False)  # (3,) [N] world
    torque: np.ndarray = field(repr=False)  # (3,) [N m] world
    source: str = "schedule"

    @property
    def end(self) -> float:
        return self.start + self.duration


def sample_random_pushes(spec: RandomPushSpec, duration: float, link: int) -> list[Push]:
    """Poisson arrivals at ``rate_hz`` after ``start_after``; direction uniform on the sphere."""
    if not spec.enabled:
        return []
    rng = np.random.default_rng(spec.seed)
    pushes: list[Push] = []
    t = spec.start_after
    while True:
        t += rng.exponential(1.0 / spec.rate_hz)
        if t >= duration:
            return pushes
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        magnitude = rng.uniform(*spec.force_range)
        pushes.append(Push(t, spec.duration, link, magnitude * direction, np.zeros(3), "random"))
        t += spec.duration  # pushes never overlap, so each has its own recovery


class Disturbances:
    """The set of pushes of one run, queried every tick in O(active pushes)."""

    def __init__(self, pushes: list[Push] | None = None) -> None:
        self._pending: list[Push] = sorted(pushes or [], key=lambda p: p.start)
        self._active: list[Push] = []
        self.history: list[Push] = []  # every push that has started, in start order
        # A streamed wrench (e.g. from a haptic device): latest sample wins, replaced or cleared
        # by its producer; it is applied on top of the pushes.
        self._stream: tuple[int, np.ndarray, np.ndarray] | None = None
        self._stream_changed = False

    @classmethod
    def from_spec(
        cls, spec: DisturbanceSpec, duration: float, link_index, default_link: int
    ) -> Disturbances:
        def resolve(p: PushSpec) -> Push:
            link = default_link if p.link is None else link_index(p.link)
            return Push(
                p.start, p.duration, link, np.asarray(p.force, float), np.asarray(p.torque, float)
            )

        pushes = [resolve(p) for p in spec.schedule]
        rlink = default_link if spec.random.link is None else link_index(spec.random.link)
        pushes += sample_random_pushes(spec.random, duration, rlink)
        return cls(pushes)

    @property
    def all(self) -> list[Push]:
        return sorted(self.history + self._pending, key=lambda p: p.start)

    def add(self, push: Push) -> None:
        """A push that arrives while running (e.g. from the bridge)."""
        starts = [p.start for p in self._pending]
        self._pending.insert(bisect.bisect_right(starts, push.start), push)

    def set_stream(self, link: int, force: np.ndarray, torque: np.ndarray) -> None:
        """Latest sample of a streamed wrench: force [N], torque [N m], world frame."""
        self._stream = (link, np.asarray(force, float).copy(), np.asarray(torque, float).copy())
        self._stream_changed = True

    def clear_stream(self) -> None:
        if self._stream is not None:
            self._stream = None
            self._stream_changed = True

    @property
    def stream(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        return self._stream

    def update(self, t: float) -> bool:
        """Advance to sim time ``t``; returns True when the applied wrenches changed."""
        changed, self._stream_changed = self._stream_changed, False
        while self._pending and self._pending[0].start <= t + 1e-12:
            p = self._pending.pop(0)
            self._active.append(p)
            self.history.append(p)
            changed = True
        if self._active:
            keep = [p for p in self._active if p.end > t + 1e-12]
            if len(keep) != len(self._active):
                self._active = keep
                changed = True
        return changed

    @property
    def active(self) -> list[Push]:
        return self._active

    def wrenches(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        out = [(p.link, p.force, p.torque) for p in self._active]
        if self._stream is not None:
            out.append(self._stream)
        return out
