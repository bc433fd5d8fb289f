"""Schramm et al.'s 1D control problem (Sec. 4): s, a in [-1, 1], s' = a,
r(s, a) = 0.2 a - (a - s)^2, gamma = 0.9, and its optimum as ground truth.

The optimum: Q*(s, a) = r(s, a) + gamma V*(a) holds exactly, so only V* on [-1, 1] is computed,
by value iteration on a 1001-point grid until the Bellman residual is below 1e-12 (the grid
restricts the max, an error of O(h^2) ~ 1e-6 in V*). The maximiser a*(s) is refined by a
parabola through the grid's best three actions, and grad_a Q*(s, a) = 0.2 - 2 (a - s)
+ gamma V*'(a) with V*'(a) = 2 (a*(a) - a) (the envelope theorem: dr/ds at the maximiser).
The paper says a*(s) = s + 1 clipped; that is the myopic maximiser of 0.2 a - (a - s)^2 + 0.9 a
and not of this problem: the computed optimum (a*(0) = 0.36, a*(s) = 1 only for s >= 0.9)
satisfies the Bellman equation to 1e-12 on the grid, s + 1 does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

__all__ = ["GAMMA", "Toy1DEnv", "Toy1DOptimum", "toy1d_optimum", "toy_derivatives", "toy_reward"]

GAMMA = 0.9


def toy_reward(s: Any, a: Any) -> Any:
    """r(s, a) for scalars or arrays."""
    return 0.2 * a - (a - s) ** 2


def toy_derivatives(s: float, a: float) -> tuple[np.ndarray, ...]:
    """(ds'/ds, ds'/da, dr/ds, dr/da), shaped like the other environments' (1x1, 1x1, 1, 1)."""
    return (
        np.zeros((1, 1)),
        np.ones((1, 1)),
        np.array([2.0 * (a - s)]),
        np.array([0.2 - 2.0 * (a - s)]),
    )


@dataclass(frozen=True)
class Toy1DOptimum:
    grid: np.ndarray  # [-] states of the value iteration
    value: np.ndarray  # V*(grid)
    policy: np.ndarray  # a*(grid), refined

    def v(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, self.grid, self.value)

    def a_star(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, self.grid, self.policy)

    def q(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        return toy_reward(s, a) + GAMMA * self.v(a)

    def dq_da(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        return 0.2 - 2.0 * (a - s) + GAMMA * 2.0 * (self.a_star(a) - a)


@lru_cache(maxsize=1)
def toy1d_optimum(points: int = 1001) -> Toy1DOptimum:
    g = np.linspace(-1.0, 1.0, points)
    r = toy_reward(g[:, None], g[None, :])
    v = np.zeros(points)
    for _ in range(10_000):
        q = r + GAMMA * v[None, :]
        v_new = q.max(axis=1)
        done = np.abs(v_new - v).max() < 1e-12
        v = v_new
        if done:
            break
    q = r + GAMMA * v[None, :]
    best = q.argmax(axis=1)
    policy = g[best].copy()
    h = g[1] - g[0]
    inner = (best > 0) & (best < points - 1)
    rows = np.nonzero(inner)[0]
    lo, mid, hi = q[rows, best[rows] - 1], q[rows, best[rows]], q[rows, best[rows] + 1]
    curv = lo - 2.0 * mid + hi
    shift = np.where(curv < 0, 0.5 * (lo - hi) / np.where(curv < 0, curv, -1.0), 0.0)
    policy[rows] += np.clip(shift, -0.5, 0.5) * h
    return Toy1DOptimum(grid=g, value=v, policy=policy)


class Toy1DEnv(gym.Env[np.ndarray, np.ndarray]):
    """Episodes of ``horizon`` steps from s0 ~ U[-1, 1]; ``derivatives`` as the swing-ups'."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, horizon: int = 20) -> None:
        self.horizon = int(horizon)
        self.nx = self.nu = 1
        self.angles: list[int] = []
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.steps = 0
        self._s = 0.0
        self._t = horizon

    @property
    def state(self) -> np.ndarray:
        return np.array([self._s])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "state" in options:
            self._s = float(np.clip(np.asarray(options["state"], float).reshape(-1)[0], -1, 1))
        else:
            self._s = float(self.np_random.uniform(-1.0, 1.0))
        self._t = 0
        return np.array([self._s], np.float32), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._t >= self.horizon:
            raise RuntimeError("step() without a running episode: call reset() first")
        a = float(np.clip(np.asarray(action, float).reshape(-1)[0], -1.0, 1.0))
        reward = float(toy_reward(self._s, a))
        self._s, self._t = a, self._t + 1
        self.steps += 1
        return np.array([a], np.float32), reward, False, self._t == self.horizon, {}

    def derivatives(self, x: np.ndarray, u: np.ndarray, source: str = "exact") -> tuple:
        return toy_derivatives(float(x[0]), float(np.clip(u[0], -1.0, 1.0)))
