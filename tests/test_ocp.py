"""The reaching OCP: derivatives against Crocoddyl's NumDiff, live target and terminal changes."""

import crocoddyl
import numpy as np
import pytest

from mpc.config import load_config
from mpc.ocp import NoTerminal, QuadraticTerminal, ReachingOCP
from mpc.robot_model import build_robot

from .conftest import IIWA, PANDA, random_configuration

ALL_TERMS = [
    "ocp.costs.ee_velocity=0.5",
    "ocp.costs.state_limits=1.0",
    "ocp.terminal.ee_velocity=1.0",
]


def make_ocp(path=IIWA, overrides=(), terminal=None):
    cfg = load_config(path, list(overrides))
    _, robot = build_robot(cfg)
    x0 = np.concatenate([cfg.robot.q0, np.zeros(robot.nq)])
    term = terminal or QuadraticTerminal(cfg.ocp.terminal)
    return cfg, robot, ReachingOCP(robot, cfg.ocp, np.asarray(cfg.task.target), term, x0)


def numdiff_check(model, x, u, rtol=1e-4, atol=1e-4):
    nd = crocoddyl.ActionModelNumDiff(model, True)
    d, dn = model.createData(), nd.createData()
    if u is None:
        model.calc(d, x)
        model.calcDiff(d, x)
        nd.calc(dn, x)
        nd.calcDiff(dn, x)
    else:
        model.calc(d, x, u)
        model.calcDiff(d, x, u)
        nd.calc(dn, x, u)
        nd.calcDiff(dn, x, u)
    assert d.cost == pytest.approx(dn.cost, rel=1e-12)
    np.testing.assert_allclose(d.Lx, dn.Lx, rtol=rtol, atol=atol)
    if u is not None:  # a terminal node has no dynamics to check
        np.testing.assert_allclose(d.Fx, dn.Fx, rtol=rtol, atol=atol)
        np.testing.assert_allclose(d.Lu, dn.Lu, rtol=rtol, atol=atol)
        np.testing.assert_allclose(d.Fu, dn.Fu, rtol=rtol, atol=atol)


@pytest.mark.parametrize("integrator", ["euler", "rk4"])
@pytest.mark.parametrize("path", [IIWA, PANDA], ids=["iiwa", "panda"])
def test_running_model_derivatives_match_numdiff(path, integrator, rng):
    _, robot, ocp = make_ocp(path, [*ALL_TERMS, f"ocp.integrator={integrator}"])
    for _ in range(3):
        q = random_configuration(rng, robot.q_lower, robot.q_upper)
        x = np.concatenate([q, rng.normal(0, 0.5, robot.nq)])
        u = robot.gravity_torques(q) + rng.normal(0, 1.0, robot.nq)
        numdiff_check(ocp.running_model, x, u)


@pytest.mark.parametrize("terminal", ["quadratic", "none"])
def test_terminal_model_derivatives_match_numdiff(terminal, rng):
    cfg, robot, ocp = make_ocp(IIWA, ALL_TERMS)
    term = NoTerminal() if terminal == "none" else QuadraticTerminal(cfg.ocp.terminal)
    ocp.set_terminal(term)
    q = random_configuration(rng, robot.q_lower, robot.q_upper)
    x = np.concatenate([q, rng.normal(0, 0.5, robot.nq)])
    numdiff_check(ocp.problem.terminalModel, x, None)


def test_solve_reaches_towards_target():
    _, robot, ocp = make_ocp(IIWA, ["ocp.horizon=40"])
    x0 = ocp.problem.x0.copy()
    assert ocp.solver.solve([x0] * 41, [robot.gravity_torques(x0[:7])] * 40, 100)
    ee_end = robot.ee_position_world(ocp.solver.xs[-1][:7])
    start_err = np.linalg.norm(robot.ee_position_world(x0[:7]) - ocp.target)
    assert np.linalg.norm(ee_end - ocp.target) < 0.2 * start_err


def test_set_target_moves_every_translation_residual():
    _, robot, ocp = make_ocp()
    new = np.array([0.3, -0.4, 0.7])
    ocp.set_target(new)
    np.testing.assert_array_equal(ocp.target, new)
    for cost_sum in (
        ocp.running_model.differential.costs,
        ocp.problem.terminalModel.differential.costs,
    ):
        np.testing.assert_array_equal(cost_sum.costs["ee_translation"].cost.residual.reference, new)


def test_torque_bounds_select_box_fddp():
    _, _, boxed = make_ocp()
    _, _, free = make_ocp(IIWA, ["ocp.torque_bounds=false"])
    assert isinstance(boxed.solver, crocoddyl.SolverBoxFDDP)
    assert type(free.solver) is crocoddyl.SolverFDDP
    np.testing.assert_array_equal(boxed.running_model.u_ub, [320, 320, 176, 176, 110, 40, 40])


def test_swapping_terminal_changes_the_terminal_cost():
    cfg, robot, ocp = make_ocp()
    x = ocp.problem.x0.copy()
    d = ocp.problem.terminalModel.createData()
    ocp.problem.terminalModel.calc(d, x)
    assert d.cost > 0
    ocp.set_terminal(NoTerminal())
    d = ocp.problem.terminalModel.createData()
    ocp.problem.terminalModel.calc(d, x)
    assert d.cost == 0.0
    assert ocp.terminal.label == "none"


def test_running_cost_evaluator_matches_solver_cost_per_knot():
    _, robot, ocp = make_ocp()
    x = ocp.problem.x0.copy()
    u = robot.gravity_torques(x[:7]) + 1.0
    d = ocp.running_model.createData()
    ocp.running_model.calc(d, x, u)
    assert ocp.running_cost_evaluator()(x, u) * ocp.dt == pytest.approx(d.cost, rel=1e-12)


def test_ik_position_reaches_a_target_inside_the_limits_or_says_none():
    cfg = load_config(IIWA)
    _, robot = build_robot(cfg)
    q0 = np.asarray(cfg.robot.q0)
    target = np.asarray(cfg.task.target)
    q = robot.ik_position(target, q0)
    assert q is not None
    assert np.linalg.norm(robot.ee_position_world(q) - target) < 1e-6
    assert (q >= robot.q_lower).all() and (q <= robot.q_upper).all()
    assert robot.ik_position(target + np.array([5.0, 0.0, 0.0]), q0) is None  # out of reach
