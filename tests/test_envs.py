"""The gymnasium environments on the OCP families (learning.envs) and the SB3 baselines
(learning.baselines, ``vmpc train baseline``): the env checkers, reward parity with the OC cost,
truncation at the horizon, non-finite states, and tiny PPO / SAC runs."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import RescaleAction
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from learning.baselines.sb3 import BaselineError, train_baseline
from learning.dvp.systems import DoublePendulumSpec, PendulumSpec
from learning.envs.ocp_env import NONFINITE_REWARD, OCPEnv
from learning.plal.config import PLALConfig, load_plal_config
from learning.plal.oc_phase import Rollouts
from learning.plal.systems import LQRSpec, make_family

from .conftest import CONFIGS

SPECS: dict[str, LQRSpec | PendulumSpec | DoublePendulumSpec] = {
    "lqr": LQRSpec(),
    "pendulum": PendulumSpec(),
    "double_pendulum": DoublePendulumSpec(),
}
LQR = CONFIGS / "plal_lqr.yaml"
# Tiny runs: 3 held-out problems of 10 knots, a 16x16 policy.
TINY = ["validation.samples=3", "problems.horizon=10", "policy.hidden=[16, 16]"]


def _env(kind: str, horizon: int = 10) -> OCPEnv:
    return OCPEnv(make_family(SPECS[kind], 10.0), horizon)


@pytest.mark.parametrize("kind", ["lqr", "double_pendulum"])  # the pendulum: as its sibling
def test_env_passes_the_checkers(kind: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(_env(kind), skip_render_check=True)
        sb3_check_env(_env(kind))
        # The same env as the baselines train it: [-1, 1] actions.
        env = _env(kind)
        unit = np.ones(env.family.nu, np.float32)
        sb3_check_env(RescaleAction(env, -unit, unit))
    # The one advice the raw env draws: SB3's [-1, 1] action box (a physical torque box is not).
    other = [str(w.message) for w in caught if "normalized" not in str(w.message)]
    assert not other


@pytest.mark.parametrize("kind", ["lqr", "pendulum"])
def test_rewards_are_minus_the_oc_cost(kind: str) -> None:
    """Same problem, same controls: the episode's return is -J of Rollouts, to rounding."""
    env = _env(kind, horizon=12)
    family = env.family
    lb, ub = family.control_box()
    rng = np.random.default_rng(3)
    us = rng.uniform(lb, ub, (12, family.nu))
    row = family.sample(1, rng)[0]

    class OpenLoop:
        t = 0

        def action(self, z: np.ndarray) -> np.ndarray:
            self.t += 1
            return us[self.t - 1]

    xs, _, costs = Rollouts(family, 12).run(OpenLoop(), row[None])
    obs, _ = env.reset(options={"row": row})
    np.testing.assert_allclose(obs, row.astype(np.float32))
    total, info = 0.0, {"episode_cost": None}
    for t in range(12):
        obs, reward, terminated, truncated, info = env.step(us[t].astype(np.float32))
        total += float(reward)
        assert not terminated
        np.testing.assert_allclose(obs, xs[0, t + 1].astype(np.float32), rtol=1e-5, atol=1e-6)
    assert total == pytest.approx(-costs[0], rel=1e-5)
    assert info["episode_cost"] == pytest.approx(costs[0], rel=1e-5)
    assert env.steps == 12


def test_truncation_at_the_horizon_and_seeding() -> None:
    env = _env("pendulum", horizon=5)
    obs_a, _ = env.reset(seed=7)
    obs_b, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs_a, obs_b)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    # Actions outside the box are clipped into it, as the OC phase's box would.
    x0 = env.reset(seed=1)[0]
    big = env.step(np.array([1e3], np.float32))[0]
    assert np.array_equal(env.reset(seed=1)[0], x0)
    at_bound = env.step(env.action_space.high)[0]
    np.testing.assert_array_equal(big, at_bound)
    assert env.steps == 7


def test_non_finite_state_ends_the_episode() -> None:
    env = _env("lqr")
    # Finite in float32, but one step of the double integrator overflows it.
    row = np.array([3.4e38, 1e38])
    obs, _ = env.reset(options={"row": row})
    obs2, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (terminated, truncated, reward) == (True, False, NONFINITE_REWARD)
    assert info["nonfinite"] and env.nonfinite == 1
    np.testing.assert_array_equal(obs2, obs)  # the last finite observation
    assert env.observation_space.contains(obs2)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1, np.float32))
    for bad in ([np.nan, 0.0], [1e39, 0.0], [0.0]):
        with pytest.raises(ValueError, match="finite values"):
            env.reset(options={"row": bad})


def _tiny_cfg() -> PLALConfig:
    return load_plal_config(LQR, TINY)


@pytest.mark.parametrize(
    ("algo", "hp", "last"),
    [
        # SAC runs through the CLI test below.
        ("ppo", {"n_steps": 64, "batch_size": 32, "n_epochs": 1}, 320),  # whole rollouts of 64
    ],
)
def test_tiny_baseline_run(algo: str, hp: dict, last: int, tmp_path: Path) -> None:
    lines: list[str] = []
    s = train_baseline(
        _tiny_cfg(), algo, 300, tmp_path, 150, False, lines.append, hyperparameters=hp
    )
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == [0, 150, 300] + ([last] if last != 300 else [])
    assert [int(r["sim_calls_total"]) for r in rows] == steps  # one dynamics call per env step
    assert all(float(r["policy_cost_ratio"]) > 0.99 for r in rows)  # J* is the optimum
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert s["algorithm"] == algo and s["sim_calls_total"] == last
    assert s["held_out_problems"] == 3 and s["hyperparameters"] == hp
    assert (tmp_path / "convergence.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").exists() and len(lines) == len(rows)
    with pytest.raises(BaselineError, match="already holds a run"):
        train_baseline(_tiny_cfg(), algo, 10, tmp_path, 5, False)


def test_baseline_refuses_bad_requests(tmp_path: Path) -> None:
    cfg = _tiny_cfg()
    with pytest.raises(BaselineError, match="unknown algorithm 'dqn'"):
        train_baseline(cfg, "dqn", 10, tmp_path, 5, False)
    with pytest.raises(BaselineError, match=">= 1"):
        train_baseline(cfg, "sac", 0, tmp_path, 5, False)
    with pytest.raises(BaselineError, match="unexpected keyword argument 'no_such'"):
        train_baseline(cfg, "sac", 10, tmp_path / "hp", 5, False, hyperparameters={"no_such": 1})
    assert not (tmp_path / "hp").exists()  # refused before any work


def test_cli_train_baseline(cli, tmp_path: Path) -> None:
    sets = [a for s in TINY for a in ("--set", s)]
    args = ["train", "baseline", "--config", LQR, "--steps", "40", "--eval-every", "20", "-q"]
    code, out, err = cli(*args, "--algo", "sac", "--out", tmp_path / "run", *sets)
    assert code == 0, err
    assert "vmpc train baseline: sac on lqr, 40 simulator calls" in out
    assert "20 steps: J(pi)/J*" in out
    assert (tmp_path / "run" / "summary.json").exists()

    code, _, err = cli(*args, "--algo", "dqn")
    assert code == 2 and "invalid choice: 'dqn'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("system:\n  kind: cartpole\n")
    code, out, err = cli(*args[:3], bad, *args[4:], "--algo", "ppo")
    assert code == 2 and err.count("\n") == 1 and "unknown system 'cartpole'" in err
    for flag in (["--steps", "0"], ["--eval-every", "0"], ["--hp", "n_steps"]):
        code, _, err = cli(*args, "--algo", "ppo", *flag)
        assert code == 2 and err.count("\n") == 1, err
