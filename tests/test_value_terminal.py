"""The learned terminal on Crocoddyl's hot path: fast/TorchScript parity, NumDiff, and
equivalence with a C++ quadratic terminal when the value is fitted to that quadratic."""

import crocoddyl
import numpy as np
import pytest
import torch

from learning.datasets import quadratic_dataset
from learning.export import export_value
from learning.networks import ResidualValueNet
from learning.sobolev import SobolevFitSpec, fit_sobolev
from mpc.config import load_config
from mpc.ocp import NoTerminal, ReachingOCP, TerminalCost
from mpc.robot_model import build_robot
from mpc.value.artifact import (
    TARGET_PARAMS,
    StateLayout,
    file_sha256,
    load_value_model,
    task_fingerprint,
)
from mpc.value.terminal import LearnedValueTerminal, make_evaluator

from .conftest import IIWA, make_artifact, random_states

CASES = [("residual", ()), ("residual", TARGET_PARAMS), ("feedforward", TARGET_PARAMS)]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(IIWA)
    _, robot = build_robot(cfg)
    x0 = np.concatenate([cfg.robot.q0, np.zeros(robot.nq)])
    return cfg, robot, x0


def _load(path):
    """A test's own artifact, trusted so that its TorchScript evaluator may run."""
    return load_value_model(path, ["."], trusted_sha256=[file_sha256(path)])


def _ocp(cfg, robot, terminal, x0, overrides=()):
    spec = cfg.ocp.model_copy(update=dict(overrides))
    return ReachingOCP(robot, spec, np.asarray(cfg.task.target), terminal, x0)


@pytest.mark.parametrize("kind, params", CASES)
def test_fast_path_matches_torchscript(setup, kind, params):
    cfg, robot, _ = setup
    model = _load(make_artifact("v.pt", cfg, kind=kind, task_params=params))
    fast, ref = make_evaluator(model, "fast"), make_evaluator(model, "torchscript")
    rng = np.random.default_rng(0)
    worst = 0.0
    for x in random_states(cfg, 50):
        if params:
            theta = rng.uniform(-0.5, 0.8, 3)
            fast.set_params(theta)
            ref.set_params(theta)
        out = []
        for ev in (fast, ref):
            lx, lxx = np.zeros(14), np.zeros((14, 14))
            v = ev.calc(x)
            ev.calc_diff(x, lx, lxx)
            out.append((v, lx, lxx))
        worst = max(
            worst,
            abs(out[0][0] - out[1][0]),
            np.abs(out[0][1] - out[1][1]).max(),
            np.abs(out[0][2] - out[1][2]).max(),
        )
    assert worst <= 1e-10


@pytest.mark.parametrize("kind, params", CASES)
@pytest.mark.parametrize("evaluator", ["fast", "torchscript"])
def test_terminal_model_against_numdiff(setup, kind, params, evaluator):
    cfg, robot, x0 = setup
    model = _load(make_artifact("v.pt", cfg, kind=kind, task_params=params))
    term = LearnedValueTerminal(model, evaluator)
    ocp = _ocp(cfg, robot, term, x0)
    cm = ocp.problem.terminalModel
    nd = crocoddyl.ActionModelNumDiff(cm)
    for x in random_states(cfg, 3, seed=1):
        d, dn = cm.createData(), nd.createData()
        cm.calc(d, x)
        cm.calcDiff(d, x)
        nd.calc(dn, x)
        nd.calcDiff(dn, x)
        assert d.cost == pytest.approx(dn.cost, rel=1e-12)
        np.testing.assert_allclose(d.Lx, dn.Lx, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(d.xnext, x)
        if kind == "feedforward":  # exact Hessian: check it by differences of our own Lx
            eps, h = 1e-6, np.zeros((14, 14))
            for i in range(14):
                xp, xm = x.copy(), x.copy()
                xp[i] += eps
                xm[i] -= eps
                for sign, xx in ((1, xp), (-1, xm)):
                    cm.calc(d, xx)
                    cm.calcDiff(d, xx)
                    h[:, i] += sign * d.Lx / (2 * eps)
            cm.calc(d, x)
            cm.calcDiff(d, x)
            np.testing.assert_allclose(d.Lxx, h, rtol=1e-4, atol=1e-6)
        else:  # Gauss-Newton: symmetric PSD
            np.testing.assert_allclose(d.Lxx, d.Lxx.T, atol=1e-14)
            assert np.linalg.eigvalsh(d.Lxx).min() > -1e-9


def test_calc_diff_after_calc_at_other_state_recomputes(setup):
    """The forward-pass cache must never serve a stale x."""
    cfg, robot, x0 = setup
    model = _load(make_artifact("v.pt", cfg))
    ev, ref = make_evaluator(model, "fast"), make_evaluator(model, "torchscript")
    a, b = random_states(cfg, 2)
    ev.calc(a)
    lx, lxx, lx_ref, lxx_ref = np.zeros(14), np.zeros((14, 14)), np.zeros(14), np.zeros((14, 14))
    ev.calc_diff(b, lx, lxx)
    ref.calc_diff(b, lx_ref, lxx_ref)
    np.testing.assert_allclose(lx, lx_ref, atol=1e-12)
    assert ev.calc(a) == pytest.approx(ref.calc(a), abs=1e-12)


def test_target_conditioned_value_follows_the_ocp_target(setup):
    cfg, robot, x0 = setup
    model = _load(make_artifact("v.pt", cfg, task_params=TARGET_PARAMS))
    ocp = _ocp(cfg, robot, LearnedValueTerminal(model), x0)
    ref = make_evaluator(model, "torchscript")
    d = ocp.problem.terminalModel.createData()
    for target in ([0.4, 0.4, 0.6], [0.2, -0.3, 0.5]):
        ocp.set_target(np.array(target))
        ref.set_params(np.array(target))
        ocp.problem.terminalModel.calc(d, x0)
        assert d.cost == pytest.approx(ref.calc(x0), abs=1e-12)


class StateQuadratic(TerminalCost):
    """C++ terminal V(x) = sum_i w_i (x_i - x_ref_i)^2 (WeightedQuad is 0.5 r^T W r, so x2)."""

    label = "cpp-state-quadratic"

    def __init__(self, x_ref, w):
        self.x_ref, self.w = x_ref, w

    def make_model(self, ocp):
        costs = crocoddyl.CostModelSum(ocp.state, ocp.nu)
        costs.addCost(
            "state",
            crocoddyl.CostModelResidual(
                ocp.state,
                crocoddyl.ActivationModelWeightedQuad(self.w),
                crocoddyl.ResidualModelState(ocp.state, self.x_ref, ocp.nu),
            ),
            2.0,
        )
        return ocp.integrate(ocp.differential(costs), 0.0)


@pytest.mark.slow
def test_value_fitted_to_a_quadratic_reproduces_the_cpp_quadratic_solution(setup):
    """Stated tolerance: xs within 5e-3 and us within 3e-2 N m (the motion spans 0.8 and the
    torques 40 N m); without a terminal the solution differs by 10x more than that."""
    cfg, robot, x0 = setup
    cfg = load_config(IIWA, ["ocp.costs.ee_translation=1.0"])
    x_ref, w = x0.copy(), np.concatenate([np.full(7, 5.0), np.full(7, 0.5)])
    spread = np.concatenate([np.full(7, 0.1), np.full(7, 0.2)])
    data = quadratic_dataset(x_ref, w, 2500, np.random.default_rng(0), spread)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a small net: one thread is 15 % faster here, same weights
    net = ResidualValueNet(14, residual_dim=16)
    fit = fit_sobolev(net, data, SobolevFitSpec(epochs=250, lr=1.5e-2), progress=False)
    assert fit.final["val_value_nmse"] < 5e-3
    export_value(
        net,
        "q.pt",
        state=StateLayout(robot="iiwa", joint_names=robot.joint_names, nx=14),
        task_params=[],
        task_fingerprint=task_fingerprint(cfg),
        algorithm="test-fit",
    )
    learned = LearnedValueTerminal(_load("q.pt"))
    sols = {}
    for name, term in (
        ("cpp", StateQuadratic(x_ref, w)),
        ("learned", learned),
        ("none", NoTerminal()),
    ):
        ocp = _ocp(cfg, robot, term, x0)
        g = robot.gravity_torques(x0[:7])
        assert ocp.solver.solve([x0] * 11, [g] * 10, 200, False), name
        sols[name] = np.array(ocp.solver.xs), np.array(ocp.solver.us)
    dx = np.abs(sols["cpp"][0] - sols["learned"][0]).max()
    du = np.abs(sols["cpp"][1] - sols["learned"][1]).max()
    assert dx <= 5e-3 and du <= 3e-2, (dx, du)
    assert np.abs(sols["cpp"][0] - sols["none"][0]).max() > 10 * 5e-3
    assert np.abs(sols["cpp"][1] - sols["none"][1]).max() > 10 * 3e-2
