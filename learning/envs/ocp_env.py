"""One OCP family as a gymnasium environment: an episode is one problem beta = (x0, theta) of the
family, played for its horizon T, and the episode's return is minus the problem's cost.

The reward is exactly the OC cost (the running model's ``data.cost``, already a rate times dt,
then the terminal cost at step T), so a model-free learner and the trajectory optimiser are scored
on the same number: the sum of the rewards of an episode equals -J(beta; pi), the closed-loop cost
:class:`~learning.plal.oc_phase.Rollouts` measures. The dynamics are the family's running model
too, so ``steps`` (its evaluations) counts simulator calls the way PDDP / PLAL count theirs.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from ..plal.systems import OCPFamily

__all__ = ["NONFINITE_REWARD", "OCPEnv"]

# The reward of a step whose state or cost is not finite (the episode ends there). Large against
# the families' costs (order 1-100 over an episode), finite so the learners' targets stay finite.
NONFINITE_REWARD = -1.0e4
# The observation bound: the largest float32. Finite (gymnasium's checker warns on infinite
# bounds), and a state beyond it has no finite float32 observation, so it counts as non-finite.
_OBS_BOUND = float(np.finfo(np.float32).max)


class OCPEnv(gym.Env[np.ndarray, np.ndarray]):
    """Episodes of ``horizon`` steps on the problems of ``family``.

    Observation: [x, theta] (float32, the policy input of PDDP / PLAL; bounded only by the
    largest float32). Action: u in
    the family's control box (float32; a step clips into the box, as the box-constrained OC phase
    and the squashed PLAL policy never leave it). ``reset`` draws (x0, theta) with
    ``family.sample`` from the env's RNG, or starts from ``options={"row": [x0, theta]}``.

    Step t < T: reward -l(x_t, u_t) (the running cost, a rate times dt); step T also adds
    -l_T(x_T) and ends the episode by truncation (the problem's horizon, not a terminal state).
    A state that is not finite (in float32, the observation's type) or a cost that is not finite
    ends it as terminated, with reward ``nonfinite_reward`` and the last finite observation;
    ``nonfinite`` counts such episodes and ``info["nonfinite"]`` marks the step.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    action_space: gym.spaces.Box
    observation_space: gym.spaces.Box

    def __init__(
        self, family: OCPFamily, horizon: int, *, nonfinite_reward: float = NONFINITE_REWARD
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.family, self.horizon = family, int(horizon)
        self.nonfinite_reward = float(nonfinite_reward)
        self.nx = family.nx
        self.n_in = family.nx + len(family.task_params)
        self._model = family.running_model()
        self._data = self._model.createData()
        self._terminal = family.terminal_model()
        self._terminal_data = self._terminal.createData()
        lb, ub = (np.asarray(b, dtype=np.float64) for b in family.control_box())
        self._lb, self._ub = lb, ub
        self.action_space = gym.spaces.Box(lb.astype(np.float32), ub.astype(np.float32))
        self.observation_space = gym.spaces.Box(-_OBS_BOUND, _OBS_BOUND, (self.n_in,), np.float32)
        self.steps = 0  # running-model evaluations over the env's life: the simulator calls
        self.nonfinite = 0  # episodes ended by a non-finite state or cost
        self._x: np.ndarray | None = None
        self._theta = np.zeros(0)
        self._t = 0
        self._cost = 0.0

    def _obs(self) -> np.ndarray:
        assert self._x is not None
        return np.concatenate([self._x, self._theta]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "row" in options:
            row = np.asarray(options["row"], dtype=np.float64).reshape(-1)
            if row.shape != (self.n_in,) or not _finite(row):
                raise ValueError(f"options['row'] must be {self.n_in} finite values [x0, theta]")
        else:
            row = self.family.sample(1, self.np_random)[0]
        self._x, self._theta = row[: self.nx].copy(), row[self.nx :].copy()
        self.family.set_task(self._theta)  # the arm's target moves into its cost models
        self._t, self._cost = 0, 0.0
        return self._obs(), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._x is None or self._t >= self.horizon:
            raise RuntimeError("step() without a running episode: call reset() first")
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self._lb, self._ub)
        self._model.calc(self._data, self._x, u)
        self.steps += 1
        cost = float(self._data.cost)
        x_next = np.array(self._data.xnext, dtype=np.float64)
        self._t += 1
        last = self._t == self.horizon
        if last and _finite(x_next):
            self._terminal.calc(self._terminal_data, x_next)
            cost += float(self._terminal_data.cost)
        if not (np.isfinite(cost) and _finite(x_next)):
            # The observation stays the last finite one: inf or NaN would reach the learner.
            self.nonfinite += 1
            obs = self._obs()
            self._t = self.horizon  # the episode is over
            return obs, self.nonfinite_reward, True, False, {"nonfinite": True}
        self._x = x_next
        self._cost += cost
        info: dict[str, Any] = {"nonfinite": False}
        if last:
            info["episode_cost"] = self._cost
        return self._obs(), -cost, False, last, info


def _finite(x: np.ndarray) -> bool:
    """Finite as a float32 observation: no NaN, nothing beyond the largest float32."""
    return bool(np.all(np.abs(x) <= _OBS_BOUND))
