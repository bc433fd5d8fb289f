"""The MPC's policy warm start (mpc.warm_start): the first solve and every target change start
from the policy's rollout, a rollout that is not finite falls back (counted), bad policies are
refused in one line; and the `vmpc eval warmstart` study on a toy policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learning.export import export_policy
from learning.networks import PolicyNet
from mpc.config import load_config
from mpc.errors import ConfigError, VmpcError
from mpc.loop import ClosedLoop
from mpc.robot_model import build_robot
from mpc.value.artifact import TARGET_PARAMS, StateLayout, task_fingerprint

from .conftest import CONFIGS, IIWA, local_config


def arm_policy(
    path: Path, cfg, *, fingerprint: str | None = None, seed: int = 0, fit: bool = True
) -> Path:
    """A target-conditioned policy for cfg's arm that holds it against gravity (fitted to the
    gravity torques around q0 in a few hundred steps), so its rollouts stay near rest."""
    _, robot = build_robot(cfg)
    torch.manual_seed(seed)
    limits = np.asarray(robot.torque_limits, float)
    net = PolicyNet(2 * robot.nq + 3, (-limits).tolist(), limits.tolist(), [32, 32]).double()
    rng = np.random.default_rng(seed)
    n = 512 if fit else 2
    q = np.asarray(cfg.robot.q0) + rng.normal(0, 0.3, (n, robot.nq))
    z = np.hstack([q, np.zeros_like(q), rng.uniform(-0.5, 0.8, (n, 3))])
    g = torch.from_numpy(np.array([robot.gravity_torques(qi) for qi in q]))
    zt = torch.from_numpy(z)
    net.set_normalisation(zt.mean(0), zt.std(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400 if fit else 0):
        loss = ((net(zt) - g) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    export_policy(
        net,
        path,
        state=StateLayout(robot=cfg.robot.name, joint_names=robot.joint_names, nx=2 * robot.nq),
        task_params=list(TARGET_PARAMS),
        task_fingerprint=fingerprint or task_fingerprint(cfg, list(TARGET_PARAMS)),
        algorithm="pddp",
    )
    return path


# The 10 ms task: at 50 ms knots explicit Euler makes the light distal joints (1e-3 kg m^2,
# no armature) blow up from any state in motion under a merely gravity-holding policy.
SHORT = CONFIGS / "iiwa_reach_short.yaml"


@pytest.fixture(scope="module")
def gravity_policy(tmp_path_factory) -> Path:
    """Fitted once for the module (~1 s); each test copies the file."""
    return arm_policy(tmp_path_factory.mktemp("policy") / "pi.pt", load_config(SHORT))


@pytest.fixture
def policy_config(tmp_path, gravity_policy):
    import shutil

    path = local_config(tmp_path, SHORT)
    (tmp_path / "models").mkdir()
    shutil.copy(gravity_policy, tmp_path / "models" / "pi.pt")
    return path


def _overrides(*extra: str) -> list[str]:
    return [
        "run.duration=0.2",
        "disturbances.schedule=[]",
        "mpc.warm_start.kind=policy",
        "mpc.warm_start.path=models/pi.pt",
        *extra,
    ]


def test_first_solve_and_each_target_change_start_from_the_policy(policy_config) -> None:
    cfg = load_config(
        policy_config,
        _overrides("task.target_changes=[{t: 0.1, target: [0.3, -0.3, 0.5]}]"),
    )
    with ClosedLoop(cfg) as loop:
        res = loop.run(progress=False)
    s = res.summary
    assert s.warm_start.startswith("policy pi.pt@")
    assert s.policy_warm_starts == 2 and s.policy_warm_start_failures == 0
    assert s.nonfinite_torques == 0
    assert np.allclose(res.log.arrays()["target"][-1], [0.3, -0.3, 0.5])


def test_a_rollout_that_is_not_finite_falls_back_to_the_gravity_guess(
    policy_config, monkeypatch
) -> None:
    from mpc.policy import warm_start

    monkeypatch.setattr(warm_start.PolicyWarmStart, "guess", lambda self, x: None)
    with ClosedLoop(load_config(policy_config, _overrides())) as loop:
        s = loop.run(progress=False).summary
    assert s.policy_warm_starts == 0 and s.policy_warm_start_failures == 1
    assert s.solver_failures == 0 and s.nonfinite_torques == 0


def test_the_shifted_warm_start_is_the_default(tmp_path) -> None:
    cfg = load_config(local_config(tmp_path), ["run.duration=0.05", "disturbances.schedule=[]"])
    with ClosedLoop(cfg) as loop:
        s = loop.run(progress=False).summary
    assert s.warm_start == "shift" and s.policy_warm_starts == 0


@pytest.mark.parametrize(
    ("setup", "culprit"),
    [
        ("missing", "pi.pt"),
        ("value", "value artifact"),
        ("other_task", "task fingerprint"),
    ],
)
def test_bad_policies_stop_the_run_in_one_line(tmp_path, setup, culprit) -> None:
    path = local_config(tmp_path)
    cfg = load_config(path)
    if setup == "value":
        from .conftest import make_artifact

        make_artifact(tmp_path / "models" / "pi.pt", cfg)
    elif setup == "other_task":
        arm_policy(tmp_path / "models" / "pi.pt", cfg, fingerprint="sha256:" + "0" * 64, fit=False)
    with pytest.raises(ConfigError, match="mpc.warm_start.path") as err:
        ClosedLoop(load_config(path, _overrides()))
    assert culprit in str(err.value) and "\n" not in str(err.value)


def test_policy_kind_needs_a_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a path"):
        load_config(IIWA, ["mpc.warm_start.kind=policy"])


def test_warmstart_study_counts_iterations_from_both_guesses(tmp_path, monkeypatch) -> None:
    """A random-weight LQR policy against the still guess, in this process."""
    import yaml

    from learning.executors import InlineExecutor
    from learning.plal.config import load_plal_config
    from learning.plal.systems import make_family
    from learning.plal.trainer import system_fingerprint
    from mpc.policy.artifact import load_policy_model
    from vmpc.studies import warmstart

    raw = {"system": {"kind": "lqr"}, "problems": {"horizon": 20}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_plal_config(tmp_path / "c.yaml")
    family = make_family(cfg.system, cfg.problems.terminal_weight)
    torch.manual_seed(0)
    net = PolicyNet(2, [-1.0], [1.0], [16]).double()
    export_policy(
        net,
        tmp_path / "pi.pt",
        state=family.state_layout(),
        task_params=[],
        task_fingerprint=family.fingerprint(system_fingerprint(cfg)),
        algorithm="pddp",
    )
    monkeypatch.setattr(warmstart, "make_executor", lambda s, b, cj: InlineExecutor(b, cj))
    policy = load_policy_model(tmp_path / "pi.pt", [tmp_path])
    out = warmstart.warmstart_study(cfg, policy, problems=6, tolerance=1e-8, progress=False)
    assert out.problems == 6 and len(out.iterations_policy) == 6
    assert out.still.failed == 0 and out.policy.failed == 0
    assert out.still.median >= 1 and np.isfinite(out.median_speedup)
    warmstart.write_warmstart(out, tmp_path / "ws", "lqr")
    assert (tmp_path / "ws" / "warmstart.png").exists()
    # A policy for another system is refused in one line.
    other = load_plal_config(tmp_path / "c.yaml", ["system.r=0.2"])
    with pytest.raises(VmpcError, match="task fingerprint"):
        warmstart.warmstart_study(other, policy, problems=2, progress=False)
