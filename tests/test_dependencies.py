"""The crocoddyl/pinocchio pair must be ABI-compatible (see ../shared/FACTS.md): build and solve
a small arm problem, and use the two calls that break with the wrong pair."""

import importlib.metadata as md

import crocoddyl
import numpy as np
import pinocchio as pin

from sim.specs import resolve_urdf


def test_pinned_pair():
    assert md.version("crocoddyl") == "3.2.1"
    assert md.version("pin") == "4.0.0"


def test_build_and_solve_small_arm_problem():
    model = pin.buildModelFromUrdf(str(resolve_urdf("pybullet_data:kuka_iiwa/model.urdf")))
    state = crocoddyl.StateMultibody(model)
    actuation = crocoddyl.ActuationModelFull(state)
    costs = crocoddyl.CostModelSum(state, actuation.nu)
    frame = model.getFrameId("lbr_iiwa_link_7")
    costs.addCost(
        "ee",
        crocoddyl.CostModelResidual(
            state,
            crocoddyl.ResidualModelFrameTranslation(
                state, frame, np.array([0.4, 0.3, 0.6]), actuation.nu
            ),
        ),
        10.0,
    )
    # ResidualModelControlGrav raises MemoryError with pin 4.1.0.
    costs.addCost(
        "u",
        crocoddyl.CostModelResidual(state, crocoddyl.ResidualModelControlGrav(state, actuation.nu)),
        1e-3,
    )
    dam = crocoddyl.DifferentialActionModelFreeFwdDynamics(state, actuation, costs)
    iam = crocoddyl.IntegratedActionModelEuler(dam, 0.05)
    x0 = np.concatenate([[0.1, 0.7, 0.0, -1.0, -0.5, 1.5, 0.0], np.zeros(7)])

    # Free-forward dynamics against Pinocchio's ABA (garbage with the wrong pair).
    data = dam.createData()
    u = np.linspace(-5, 5, 7)
    dam.calc(data, x0, u)
    expected = pin.aba(model, model.createData(), x0[:7], x0[7:], u)
    np.testing.assert_allclose(data.xout, expected, atol=1e-9)

    problem = crocoddyl.ShootingProblem(
        x0, [iam] * 10, crocoddyl.IntegratedActionModelEuler(dam, 0.0)
    )
    problem.nthreads = 1
    solver = crocoddyl.SolverFDDP(problem)
    assert solver.solve([x0] * 11, [np.zeros(7)] * 10, 100)
    assert np.isfinite(solver.cost)
    assert solver.cost < problem.calc([x0] * 11, [np.zeros(7)] * 10)
