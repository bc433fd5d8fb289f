"""PyBullet (the plant) and Pinocchio (the controller's model) must describe the same robot."""

import numpy as np
import pytest

from mpc.config import load_config
from mpc.robot_model import build_robot
from sim import MismatchSpec
from sim.bullet_arm import BulletArm

from .conftest import IIWA, PANDA, random_configuration


@pytest.fixture(params=[IIWA, PANDA], ids=["iiwa", "panda"])
def pair(request):
    cfg = load_config(request.param)
    urdf, robot = build_robot(cfg)
    arm = BulletArm(cfg.robot, urdf, cfg.sim)
    yield cfg, robot, arm
    arm.close()


def test_same_joints(pair):
    _, robot, arm = pair
    assert arm.joint_names == robot.joint_names


def test_gravity_and_mass_matrix_agree(pair, rng):
    _, robot, arm = pair
    for _ in range(10):
        q = random_configuration(rng, robot.q_lower, robot.q_upper)
        np.testing.assert_allclose(arm.gravity_torques(q), robot.gravity_torques(q), atol=1e-8)
        np.testing.assert_allclose(arm.mass_matrix(q), robot.mass_matrix(q), atol=1e-8)


def test_ee_position_agrees(pair, rng):
    _, robot, arm = pair
    for _ in range(5):
        q = random_configuration(rng, robot.q_lower, robot.q_upper)
        arm.reset(q)
        np.testing.assert_allclose(arm.ee_position_world(), robot.ee_position_world(q), atol=1e-9)


def test_one_step_of_torque_control_matches_forward_dynamics(pair, rng):
    """Damping zeroed and motors disabled: PyBullet's acceleration equals Pinocchio's ABA."""
    import pinocchio as pin

    _, robot, arm = pair
    q = random_configuration(rng, robot.q_lower, robot.q_upper)
    v = rng.normal(0, 0.3, robot.nq)
    tau = robot.gravity_torques(q) + rng.normal(0, 2.0, robot.nq)
    arm.reset(q, v)
    arm.step(tau)
    q1, v1 = np.zeros(robot.nq), np.zeros(robot.nq)
    arm.read_state(q1, v1)
    a_sim = (v1 - v) / arm.dt
    a_model = pin.aba(robot.model, robot.data, q, v, tau)
    # Panda: its locked fingers are held by stiff position motors, hence not exactly rigid.
    np.testing.assert_allclose(a_sim, a_model, rtol=1e-3, atol=1e-3)


def test_world_frame_force_on_ee_maps_through_jacobian(pair, rng):
    """A world-frame push at the EE point acts as J^T f in joint space."""
    import pinocchio as pin

    _, robot, arm = pair
    q = random_configuration(rng, robot.q_lower, robot.q_upper)
    g = robot.gravity_torques(q)
    force = np.array([20.0, -10.0, 5.0])
    arm.reset(q)
    arm.set_wrenches([(arm.ee_link, force, np.zeros(3))])
    arm.step(g)
    qs, vs = np.zeros(robot.nq), np.zeros(robot.nq)
    arm.read_state(qs, vs)
    J = pin.computeFrameJacobian(
        robot.model, robot.data, q, robot.ee_frame_id, pin.LOCAL_WORLD_ALIGNED
    )[:3]
    a_model = pin.aba(robot.model, robot.data, q, np.zeros(robot.nq), g + J.T @ force)
    np.testing.assert_allclose(vs / arm.dt, a_model, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("damping", [None, 0.5, 5.0])
def test_joint_damping_is_zero_unless_mismatch_asks(damping):
    """The URDF's 0.5 N m s/rad is zeroed by default; the mismatch knob sets it exactly."""
    import pinocchio as pin

    cfg = load_config(IIWA)
    urdf, robot = build_robot(cfg)
    q, v = np.asarray(cfg.robot.q0), np.ones(robot.nq)
    tau = robot.gravity_torques(q)
    with BulletArm(cfg.robot, urdf, cfg.sim, MismatchSpec(joint_damping=damping)) as arm:
        arm.reset(q, v)
        arm.step(tau)
        q1, v1 = np.zeros(robot.nq), np.zeros(robot.nq)
        arm.read_state(q1, v1)
    expected = pin.aba(robot.model, robot.data, q, v, tau - (damping or 0.0) * v)
    np.testing.assert_allclose((v1 - v) / arm.dt, expected, atol=1e-6)


def test_payload_mismatch_changes_gravity():
    cfg = load_config(IIWA)
    urdf, robot = build_robot(cfg)
    q = np.asarray(cfg.robot.q0)
    with BulletArm(cfg.robot, urdf, cfg.sim, MismatchSpec(payload_kg=2.0)) as arm:
        diff = arm.gravity_torques(q) - robot.gravity_torques(q)
    assert np.abs(diff[1]) > 1.0  # a 2 kg payload loads the shoulder by several N m
