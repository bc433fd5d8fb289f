"""What the critics' environments share: a fixed-length episode over a float64 state that can be
set from outside (held-out starts), observed as its float32 copy, with the bookkeeping RL needs
(steps paid for, non-finite states ended and counted).

A subclass says where an episode starts (:meth:`StateEpisodeEnv._random_start`), how a start
becomes the system's state (:meth:`StateEpisodeEnv._place`) and what one step does
(:meth:`StateEpisodeEnv._transition`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

__all__ = ["NONFINITE_STEP_REWARD", "StateEpisodeEnv"]

NONFINITE_STEP_REWARD = -1.0e3  # the step that produced a non-finite state (the episode ends)


class StateEpisodeEnv(gym.Env[np.ndarray, np.ndarray]):
    """Episodes of ``horizon`` steps; ``reset(options={"state": x0})`` starts from x0.

    An episode ends by truncation at the horizon; a non-finite state or reward ends it as
    terminated with :data:`NONFINITE_STEP_REWARD` and the last finite observation
    (``nonfinite`` counts those, ``steps`` every step of the env's life).
    """

    metadata: dict[str, Any] = {"render_modes": []}
    action_space: gym.spaces.Box
    observation_space: gym.spaces.Box

    def __init__(self, nx: int, horizon: int) -> None:
        self.nx, self.horizon = int(nx), int(horizon)
        self.steps = 0  # real-system steps over the env's life: the samples RL pays for
        self.nonfinite = 0
        self._x: np.ndarray | None = None
        self._t = 0

    @abstractmethod
    def _random_start(self) -> np.ndarray:
        """A start state drawn from ``self.np_random``."""

    @abstractmethod
    def _place(self, x0: np.ndarray) -> np.ndarray:
        """Put the system in x0; returns the state as the env holds it (e.g. angles wrapped)."""

    @abstractmethod
    def _transition(self, x: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float]:
        """(x', r) of one step of the real system from x under ``action``."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "state" in options:
            x0 = np.asarray(options["state"], dtype=np.float64).reshape(-1)
            if x0.shape != (self.nx,) or not np.all(np.isfinite(x0)):
                raise ValueError(f"options['state'] must be {self.nx} finite values")
        else:
            x0 = self._random_start()
        self._x, self._t = self._place(x0), 0
        return self._x.astype(np.float32), {}

    @property
    def state(self) -> np.ndarray:
        """The current state in float64 (the observation is its float32 copy)."""
        assert self._x is not None
        return self._x.copy()

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._x is None or self._t >= self.horizon:
            raise RuntimeError("step() without a running episode: call reset() first")
        x_next, reward = self._transition(self._x, np.asarray(action, dtype=np.float64))
        self.steps += 1
        self._t += 1
        if not (np.all(np.isfinite(x_next)) and math.isfinite(reward)):
            self.nonfinite += 1
            self._t = self.horizon
            obs = self._x.astype(np.float32)
            return obs, NONFINITE_STEP_REWARD, True, False, {"nonfinite": True}
        self._x = x_next
        return x_next.astype(np.float32), reward, False, self._t == self.horizon, {}
