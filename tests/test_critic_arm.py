"""The arm as a critic environment: its Jacobians against finite differences, its reward against
the MPC's running cost, the payload mismatch, check_env, and a tiny VG-SAC run whose exported
critic passes the MPC's own task check (the critic-as-terminal contract)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from learning.critics.config import load_critic_config
from learning.critics.trainer import train_critic
from learning.envs.arm import ArmReachEnv, ArmReachSpec
from mpc.config import load_config
from mpc.errors import ConfigError
from mpc.ocp import NoTerminal, ReachingOCP
from mpc.robot_model import build_robot
from mpc.value.artifact import check_task, load_value_model

from .conftest import central_difference

CONFIG = "configs/iiwa_reach_short.yaml"


@pytest.fixture(scope="module")
def env() -> ArmReachEnv:
    e = ArmReachEnv(ArmReachSpec(config=CONFIG, horizon=20))
    yield e
    e.close()


def test_arm_jacobians_match_finite_differences(env: ArmReachEnv, rng) -> None:
    nx = env.nx
    for _ in range(3):
        x = np.concatenate([env.q0 + rng.uniform(-0.3, 0.3, env.nq), rng.normal(size=env.nq)])
        a = rng.uniform(-0.9, 0.9, env.nu)
        f_x, f_a, r_x, r_a = env.derivatives(x, a, "nominal")

        def x_next(z):
            return env.nominal_step(z[:nx], z[nx:])[0]

        def reward(z):
            return env.nominal_step(z[:nx], z[nx:])[1]

        z = np.concatenate([x, a])
        jac = central_difference(x_next, z)
        np.testing.assert_allclose(f_x, jac[:, :nx], atol=1e-6)
        np.testing.assert_allclose(f_a, jac[:, nx:], atol=1e-6)
        grad = central_difference(reward, z)
        np.testing.assert_allclose(r_x, grad[:nx], atol=1e-8)
        np.testing.assert_allclose(r_a, grad[nx:], atol=1e-8)
        fd = env.derivatives(x, a, "finite_difference")
        for analytic, numeric in zip((f_x, f_a, r_x, r_a), fd, strict=True):
            np.testing.assert_allclose(analytic, numeric, atol=1e-6)
    with pytest.raises(ValueError, match="no exact|unknown Jacobian source"):
        env.derivatives(x, a, "exact")


def test_arm_reward_is_the_mpc_running_cost_and_the_payload_is_a_mismatch(
    env: ArmReachEnv,
) -> None:
    cfg = load_config(CONFIG)
    _, robot = build_robot(cfg)
    cost = ReachingOCP(robot, cfg.ocp, np.asarray(cfg.task.target), NoTerminal())
    running = cost.running_cost_evaluator()
    x0 = np.concatenate([env.q0, np.zeros(env.nq)])
    env.reset(options={"state": x0})
    a = np.full(env.nu, 0.2)
    u = env.torque(x0, a)
    _, r, *_ = env.step(a)
    assert r == pytest.approx(-running(x0, u) * cfg.ocp.dt, rel=1e-12)
    # a = 0 asks for zero acceleration: the nominal model holds still, the real arm without a
    # payload nearly does, and with 3 kg on the EE it sags.
    heavy = ArmReachEnv(ArmReachSpec(config=CONFIG, horizon=20, payload_kg=3.0))
    try:
        drift = {}
        for name, e in (("plain", env), ("payload", heavy)):
            e.reset(options={"state": x0})
            for _ in range(10):
                e.step(np.zeros(e.nu))
            drift[name] = float(np.abs(e.state - x0).max())
        assert drift["plain"] < 1e-2 < drift["payload"], drift
    finally:
        heavy.close()


def test_arm_passes_check_env() -> None:
    e = ArmReachEnv(ArmReachSpec(config=CONFIG, horizon=5))
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


def test_arm_refuses_exact_jacobians_in_one_line() -> None:
    with pytest.raises(ConfigError, match="sobolev.jacobians") as err:
        load_critic_config("configs/critic_arm.yaml", ["sobolev.jacobians=exact"])
    assert len(str(err.value).splitlines()) == 1


def test_tiny_vg_sac_on_the_arm_exports_a_value_for_the_mpc(tmp_path) -> None:
    overrides = [
        "train.steps=60", "train.learning_starts=20", "train.batch_size=16", "env.horizon=20",
        "eval.every=20", "eval.episodes=1", "critic.hidden=[16]", "actor.hidden=[16]",
    ]  # fmt: skip
    cfg = load_critic_config("configs/critic_arm.yaml", overrides)
    result = train_critic(cfg, tmp_path / "run", progress=False, export=tmp_path / "v.pt")
    assert result.summary["env"] == "arm-reach" and result.summary["env_steps"] == 60
    assert all(np.isfinite(m["return_mean"]) for m in result.metrics)
    assert result.metrics[-1]["beta_s"] > 0  # the first-order terms ran
    value = load_value_model(tmp_path / "v.pt", [tmp_path])
    mpc_cfg = load_config(CONFIG)
    _, robot = build_robot(mpc_cfg)
    # The MPC's own check: right robot, joints and task fingerprint (no mismatch to force).
    assert check_task(value, mpc_cfg, 2 * robot.nq, robot.joint_names) is None
    assert value.metadata.provenance.algorithm == "vg-sac"
