"""Task-space features and the goal-zero residual: derivatives against finite differences, the
fast path against the TorchScript module, exact zeros on the goal manifold, refusals."""

from __future__ import annotations

import json

import crocoddyl
import numpy as np
import pytest

from mpc.config import load_config
from mpc.robot_model import build_robot
from mpc.value.artifact import TARGET_PARAMS, ValueModelError, load_value_model
from mpc.value.features import FeatureMap, UnknownFeature, feature_dim, goal_mask
from mpc.value.terminal import ValueTerminalModel, make_evaluator

from .conftest import IIWA, make_artifact
from .test_value_artifact import _rewrite_member

FEATURES = ["ee_position_error", "ee_velocity"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(IIWA)


@pytest.fixture(scope="module")
def robot(cfg):
    return build_robot(cfg)[1]


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def _states(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    q = np.asarray(cfg.robot.q0) + rng.uniform(-0.5, 0.5, (n, 7))
    return np.hstack([q, rng.uniform(-1.0, 1.0, (n, 7))])


def _central_diff(f, x, eps=1e-6):
    cols = []
    for k in range(len(x)):
        dx = np.zeros_like(x)
        dx[k] = eps
        cols.append((np.array(f(x + dx), copy=True) - np.array(f(x - dx), copy=True)) / (2 * eps))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("names", [["ee_position_error"], ["ee_velocity"], FEATURES])
def test_feature_jacobians_match_finite_differences(cfg, robot, names):
    fm = FeatureMap(robot.model, robot.ee_frame_id, names)
    target = np.asarray(cfg.task.target)
    for x in _states(cfg, 4):
        phi, jac = (a.copy() for a in fm.compute(x, target))
        assert np.allclose(fm.value(x, target), phi, atol=1e-14)  # the cheap pass agrees
        num = _central_diff(lambda y: fm.value(y, target), x)
        assert np.abs(jac - num).max() < 1e-8, names
    # The meaning, not just the derivative: position error and velocity of the EE frame.
    x = _states(cfg, 1, seed=3)[0]
    phi, _ = fm.compute(x, target)
    if names[0] == "ee_position_error":
        assert np.allclose(phi[:3], robot.ee_position_world(x[:7]) - target, atol=1e-12)


def _evaluators(path, robot, target, theta=None):
    model = load_value_model(path, ["models"], trusted_sha256=[_sha(path)], module=True)
    out = []
    for kind in ("fast", "torchscript"):
        ev = make_evaluator(model, kind, robot)
        if theta is not None:
            ev.set_params(theta)
        ev.set_goal(target if theta is None else theta)
        out.append(ev)
    return out


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _calc(ev, x):
    lx, lxx = np.zeros(14), np.zeros((14, 14))
    v = ev.calc(x)
    ev.calc_diff(x, lx, lxx)
    return v, lx, lxx


@pytest.mark.parametrize("conditioned", [False, True])
def test_fast_path_matches_the_module_and_its_gradient_matches_numdiff(
    cfg, robot, models, conditioned
):
    params = TARGET_PARAMS if conditioned else ()
    path = make_artifact(
        models / "f.pt", cfg, task_params=params, features=FEATURES, goal_zero=True, seed=1
    )
    target = np.asarray(cfg.task.target)
    theta = np.array([0.5, 0.1, 0.5]) if conditioned else None
    fast, ts = _evaluators(path, robot, target, theta)
    for x in _states(cfg, 5, seed=2):
        vf, lf, hf = _calc(fast, x)
        vt, lt, ht = _calc(ts, x)
        assert abs(vf - vt) <= 1e-10 * max(1.0, abs(vt))
        assert np.abs(lf - lt).max() <= 1e-9 * max(1.0, np.abs(lt).max())
        assert np.abs(hf - ht).max() <= 1e-9 * max(1.0, np.abs(ht).max())
        assert np.allclose(hf, hf.T) and np.linalg.eigvalsh(hf).min() > -1e-9  # Gauss-Newton
    # Crocoddyl's NumDiff of the terminal model, as for every derived model.
    model = ValueTerminalModel(crocoddyl.StateMultibody(robot.model), 7, fast)
    num = crocoddyl.ActionModelNumDiff(model, True)
    d, dn = model.createData(), num.createData()
    for x in _states(cfg, 3, seed=4):
        fast.invalidate()
        model.calc(d, x)
        model.calcDiff(d, x)
        num.calc(dn, x)
        num.calcDiff(dn, x)
        assert np.abs(d.Lx - dn.Lx).max() < 1e-5 * max(1.0, np.abs(dn.Lx).max())


@pytest.mark.parametrize("conditioned", [False, True])
def test_goal_zero_value_vanishes_on_the_goal_manifold_whatever_the_weights(
    cfg, robot, models, conditioned
):
    """At rest with the EE on the target, at several IK postures (the null space of a redundant
    arm), V and dV/dx are below 1e-9 for random weights; the plain residual is not."""
    params = TARGET_PARAMS if conditioned else ()
    zero = make_artifact(
        models / "z.pt", cfg, task_params=params, features=FEATURES, goal_zero=True
    )
    plain = make_artifact(models / "p.pt", cfg, task_params=params, features=FEATURES)
    target = np.array([0.45, 0.25, 0.55]) if conditioned else np.asarray(cfg.task.target)
    rng = np.random.default_rng(0)
    goals = []
    for _ in range(4):
        q_init = np.asarray(cfg.robot.q0) + rng.uniform(-0.6, 0.6, 7)
        q = robot.ik_position(target, q_init, tol_m=1e-13, max_iter=500)
        if q is not None:
            goals.append(np.concatenate([q, np.zeros(7)]))
            assert np.linalg.norm(robot.ee_position_world(q) - target) < 1e-6
    assert len(goals) >= 3 and np.ptp(np.array(goals)[:, :7], axis=0).max() > 0.05  # distinct
    theta = target if conditioned else None
    for ev in _evaluators(zero, robot, target, theta):
        for x in goals:
            v, lx, _ = _calc(ev, x)
            assert v < 1e-9 and np.abs(lx).max() < 1e-9, (v, np.abs(lx).max())
    fast_plain = _evaluators(plain, robot, target, theta)[0]
    assert max(_calc(fast_plain, x)[0] for x in goals) > 1e-6


def test_goal_mask_layout():
    m = goal_mask(7, 3, FEATURES)
    assert m.tolist() == [1.0] * 7 + [0.0] * 7 + [1.0] * 3 + [0.0] * 6
    assert feature_dim(FEATURES) == 6


def test_a_model_with_an_unknown_feature_is_refused_in_one_line(cfg, models):
    path = make_artifact(models / "u.pt", cfg, features=["ee_position_error"])

    def rename(blob):
        meta = json.loads(blob)
        meta["features"] = ["joint_torque"]
        return json.dumps(meta).encode()

    _rewrite_member(path, lambda n: n.endswith("extra/metadata.json"), rename)
    with pytest.raises(ValueModelError, match="unknown input feature 'joint_torque'") as err:
        load_value_model("models/u.pt", ["models"])
    assert "ee_position_error, ee_velocity" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnknownFeature):
        feature_dim(["joint_torque"])


def test_a_goal_zero_model_without_the_position_error_is_refused(cfg, models):
    """Without ee_position_error, z * goal_mask = z at every state at rest, not only at the goal:
    such a value would be zero wherever the arm stands still."""
    path = make_artifact(models / "g.pt", cfg, features=FEATURES[:1], goal_zero=True)

    def drop(blob):
        meta = json.loads(blob)
        meta["features"] = ["ee_velocity"]  # the same width: only the new check can refuse it
        return json.dumps(meta).encode()

    _rewrite_member(path, lambda n: n.endswith("extra/metadata.json"), drop)
    with pytest.raises(ValueModelError, match="goal_zero needs the ee_position_error feature"):
        load_value_model("models/g.pt", ["models"])


def test_a_feature_value_swaps_into_the_running_loop(cfg, models, tmp_path):
    """The whole contract: a goal-zero feature model is checked, swapped in and run."""
    from mpc.loop import ClosedLoop

    make_artifact(models / "f.pt", cfg, features=FEATURES, goal_zero=True, seed=2)
    sets = [
        "run.duration=0.3",
        "disturbances.schedule=[]",
        f"value.allowed_dirs=[{models}]",
        "ocp.terminal.kind=models/f.pt",
    ]
    with ClosedLoop(load_config(IIWA, sets)) as loop:
        s = loop.run(progress=False).summary
    assert s.swaps[0]["accepted"] and s.solver_failures == 0 and s.nonfinite_torques == 0


def test_the_fit_and_the_mpc_apply_the_same_chain_rule(cfg, robot, models):
    """dV/dx as learning.sobolev computes it for the gradient loss (autograd in z, then
    dphi/dx from the shared feature map) equals the MPC terminal's Lx for the exported file."""
    import torch

    from learning.networks import ResidualValueNet
    from learning.sobolev import grad_x

    path = make_artifact(models / "c.pt", cfg, features=FEATURES, goal_zero=True, seed=5)
    model = load_value_model(path, ["models"])
    net = ResidualValueNet(20, goal_mask=torch.from_numpy(goal_mask(7, 0, FEATURES)))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.arrays.items()})
    net.double()
    target = np.asarray(cfg.task.target)
    xs = _states(cfg, 4, seed=6)
    phis, jacs = FeatureMap(robot.model, robot.ee_frame_id, FEATURES).batch(
        xs, np.tile(target, (4, 1))
    )
    z = torch.from_numpy(np.hstack([xs, phis])).requires_grad_(True)
    v = net(z)
    (g_z,) = torch.autograd.grad(v.sum(), z)
    g_x = grad_x(g_z, 14, torch.from_numpy(jacs)).numpy()
    fast = make_evaluator(model, "fast", robot)
    fast.set_goal(target)
    for i, x in enumerate(xs):
        value, lx, _ = _calc(fast, x)
        assert abs(value - float(v[i].detach())) < 1e-12 * max(1.0, value)
        assert np.abs(lx - g_x[i]).max() < 1e-10 * max(1.0, np.abs(lx).max())
