"""DVP: value targets against finite differences, determinism across executors, kill -9 and
resume, clear errors."""

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from learning.dvp.config import load_dvp_config
from learning.dvp.systems import (
    ArmSpec,
    CartpoleSpec,
    PendulumSpec,
    UnicycleSpec,
    ZeroTerminal,
    make_system,
)
from learning.dvp.trainer import train_dvp
from mpc.errors import ConfigError, VmpcError

from .conftest import IIWA, ROOT, wait_until

TINY = {
    "system": {"kind": "pendulum"},
    "dvp": {"iterations": 3, "samples": 12, "horizon": 10},
    "fit": {"epochs": 2},
    "validation": {"samples": 6, "horizon_factor": 3},
    "executor": {"kind": "local", "workers": 2, "chunk": 3},
}


def write_cfg(path: Path, **changes) -> Path:
    raw = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def run_files(out: Path) -> dict[str, np.ndarray]:
    """Everything a run learned: each iteration's dataset and weights."""
    import io

    import torch

    files = {}
    for d in sorted((out / "checkpoints").glob("iter_*")):
        with np.load(d / "dataset.npz") as data:
            for k in data.files:
                files[f"{d.name}/{k}"] = data[k]
        state = torch.load(io.BytesIO((d / "model.pt").read_bytes()), weights_only=True)
        for k, v in state.items():
            files[f"{d.name}/{k}"] = v.numpy()
    return files


@pytest.mark.parametrize(
    "spec",
    [PendulumSpec(), CartpoleSpec(), UnicycleSpec(), ArmSpec(config=str(IIWA))],
    ids=lambda s: s.kind,
)
def test_value_gradient_targets_match_finite_differences(spec):
    system = make_system(spec)
    row = system.sample(1, np.random.default_rng(3))[0]
    make = lambda: ZeroTerminal(system.state, system.nu)  # noqa: E731
    out = system.solve(row, 10, "none", make, 3, 500)
    assert out.ok and out.z.shape[0] == 3
    # Cost-to-go decreases along the solution, and its gradient is the solver's Vx.
    assert out.value[0] >= out.value[1] >= out.value[2]
    eps, fd = 1e-5, np.zeros(system.nx)
    for i in range(system.nx):
        plus, minus = row.copy(), row.copy()
        plus[i] += eps
        minus[i] -= eps
        fd[i] = (
            system.solve(plus, 10, "none", make, 1, 500).value[0]
            - system.solve(minus, 10, "none", make, 1, 500).value[0]
        ) / (2 * eps)
    np.testing.assert_allclose(out.grad_x[0], fd, rtol=2e-2, atol=2e-3)


def test_cartpole_underactuated_dynamics_match_numdiff():
    import crocoddyl

    system = make_system(CartpoleSpec())
    problem, _ = system.problem(5, "none", lambda: ZeroTerminal(system.state, system.nu))
    assert system.nu == 1  # only the cart is pushed
    dam = problem.runningModels[0].differential
    num = crocoddyl.DifferentialActionModelNumDiff(dam, False)
    data, num_data = dam.createData(), num.createData()
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, u = system.sample(1, rng)[0], rng.uniform(-5, 5, 1)
        dam.calc(data, x, u)
        dam.calcDiff(data, x, u)
        num.calc(num_data, x, u)
        num.calcDiff(num_data, x, u)
        np.testing.assert_allclose(data.Fx, num_data.Fx, atol=1e-5)
        np.testing.assert_allclose(data.Fu, num_data.Fu, atol=1e-5)
    # The force moves the cart and, through the coupling, the pole; no torque on the pole joint.
    dam.calc(data, np.zeros(4), np.array([1.0]))
    assert data.xout[0] > 0 and data.xout[1] < 0


def test_cartpole_long_horizon_keeps_the_pole_up():
    """The ground truth's 10x horizon must not fall into the hanging local optimum."""
    system = make_system(CartpoleSpec())
    row = np.array([0.3, 0.15, 0.1, -0.2])
    make = lambda: ZeroTerminal(system.state, system.nu)  # noqa: E731
    short = system.solve(row, 50, "none", make, 1, 200)
    long = system.solve(row, 500, "none", make, 1, 200)
    assert short.ok and long.ok
    assert long.value[0] < 2.0 * short.value[0]
    _, solver = system.problem(500, "none", make)
    assert np.abs(np.array(solver.xs)[:, 1]).max() < 0.5  # [rad] pole stays near upright


@pytest.mark.parametrize("conditioned", [False, True], ids=["fixed", "conditioned"])
def test_arm_goal_anchors_are_at_rest_on_the_target_where_the_running_cost_vanishes(conditioned):
    system = make_system(ArmSpec(config=str(IIWA), conditioned=conditioned))
    rows = system.sample(6, np.random.default_rng(1))
    anchors = system.goal_anchors(rows, 10)
    assert anchors is not None and anchors.shape == (10, rows.shape[1])
    nq = system.robot.nq
    problem, _ = system.problem(1, "none", lambda: ZeroTerminal(system.state, system.nu))
    model, data = problem.runningModels[0], problem.runningDatas[0]
    for z in anchors:
        target = z[2 * nq :] if conditioned else np.asarray(system.cfg.task.target)
        system._set_task(1, z[2 * nq :])
        assert np.linalg.norm(system.robot.ee_position_world(z[:nq]) - target) < 1e-5
        np.testing.assert_array_equal(z[nq : 2 * nq], 0.0)
        model.calc(data, z[: 2 * nq], system.robot.gravity_torques(z[:nq]))
        assert data.cost < 1e-9  # so V = 0 and dV/dx = 0 there


# Two iterations: the second is the one a kill interrupts and a resume redoes.
DETERMINISM = {"system": {"kind": "cartpole"}, "dvp": {"iterations": 2}}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> dict[str, np.ndarray]:
    """What a one-worker run of the tiny cartpole config learns, in this process: the reference
    of the determinism tests (cartpole draws no value map, which would dominate their time)."""
    tmp = tmp_path_factory.mktemp("dvp_reference")
    cfg = load_dvp_config(write_cfg(tmp / "one.yaml", **DETERMINISM, executor={"kind": "inline"}))
    train_dvp(cfg, tmp / "one", progress=False)
    files = run_files(tmp / "one")
    assert {k.split("/")[0] for k in files} == {f"iter_{i:04d}" for i in range(2)}
    return files


def assert_same_files(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k], err_msg=k)


@pytest.mark.slow
def test_same_seed_same_dataset_on_one_or_two_workers_and_after_kill_resume(
    tmp_path, reference_run
):
    """A real ``vmpc train dvp`` on two workers, killed (-9) after its first checkpoint and
    resumed (in process), writes the same datasets and weights as the uninterrupted run."""
    config = write_cfg(tmp_path / "a.yaml", **DETERMINISM, executor={"workers": 2})
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vmpc", "train", "dvp", "--config", str(config), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "-q"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def checkpointed() -> bool:
        state = out / "state.json"
        return state.exists() and json.loads(state.read_text())["completed"] >= 1

    try:
        wait_until(
            lambda: checkpointed() or proc.poll() is not None,
            timeout=120,
            interval=0.005,
            what="the first DVP checkpoint",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = json.loads((out / "state.json").read_text())["completed"]
    assert done == 1, "the kill should land mid-run"
    # Resumed in process (executor.* may change on resume): the dataset does not depend on it.
    resumed = subprocess.run(
        [*cmd, "--resume", "--executor", "inline", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_files(reference_run, run_files(out))
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + one row per iteration, none twice
    assert (out / "value.pt").exists() and not list((out / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
def test_ray_executor_gives_the_same_dataset(tmp_path, reference_run):
    pytest.importorskip("ray")
    # The first iteration (with its held-out set) is enough to compare datasets and weights.
    one = {**DETERMINISM, "dvp": {**DETERMINISM["dvp"], "iterations": 1}}
    ray_cfg = load_dvp_config(
        write_cfg(tmp_path / "r.yaml", **one, executor={"kind": "ray", "workers": 2})
    )
    train_dvp(ray_cfg, tmp_path / "ray", progress=False)
    first = {k: v for k, v in reference_run.items() if k.startswith("iter_0000/")}
    assert_same_files(first, run_files(tmp_path / "ray"))


def test_existing_run_needs_resume(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "state.json").write_text('{"completed": 2}')
    cfg = load_dvp_config(write_cfg(tmp_path / "a.yaml"))
    with pytest.raises(VmpcError, match="already holds 2 DVP iteration"):
        train_dvp(cfg, out, progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"system": {"kind": "acrobot"}}, "system.kind: unknown system 'acrobot'"),
        ({"dvp": {"horizon": 0}}, "dvp.horizon: Input should be greater than or equal to 1"),
        ({"dvp": {"horizn": 3}}, "dvp.horizn: unknown key"),
        ({"network": {"features": ["joint_torque"]}}, "unknown input feature 'joint_torque'"),
        ({"network": {"goal_zero": True}}, "goal_zero needs the ee_position_error feature"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, changes, message):
    with pytest.raises(ConfigError) as info:
        load_dvp_config(write_cfg(tmp_path / "a.yaml", **changes))
    assert message in str(info.value)


def test_sampling_box_outside_joint_limits_is_refused():
    with pytest.raises(
        VmpcError, match="q_spread: the sampling box .* leaves the joint limits of lbr_iiwa_joint_6"
    ):
        make_system(ArmSpec(config=str(IIWA), q_spread=0.8))


def test_target_box_must_lie_in_the_workspace_and_bounds_the_sampled_targets():
    with pytest.raises(VmpcError, match="system.target_box: .* leaves the config's task.workspace"):
        make_system(
            ArmSpec(
                config=str(IIWA), conditioned=True, target_box=((0.3, -0.5, 0.2), (0.75, 0.5, 5.0))
            )
        )
    box = ((0.3, -0.5, 0.2), (0.75, 0.5, 0.8))
    system = make_system(ArmSpec(config=str(IIWA), conditioned=True, target_box=box))
    targets = system.sample(20, np.random.default_rng(0))[:, 2 * system.robot.nq :]
    assert (targets >= box[0]).all() and (targets <= box[1]).all()
    assert system.task_box() == ([0.3, -0.5, 0.2], [0.75, 0.5, 0.8])


@pytest.mark.slow
def test_conditioned_arm_run_records_its_target_box(tmp_path):
    from mpc.value.artifact import TARGET_PARAMS, read_metadata

    box = [[0.3, -0.5, 0.2], [0.75, 0.5, 0.8]]
    cfg = load_dvp_config(
        write_cfg(
            tmp_path / "a.yaml",
            system={"kind": "arm", "config": str(IIWA), "conditioned": True, "target_box": box},
            dvp={"iterations": 1, "samples": 4, "horizon": 5},
            validation={"samples": 2, "horizon_factor": 2},
            executor={"workers": 1, "chunk": 2},
        )
    )
    result = train_dvp(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    meta = read_metadata(result.artifact)
    assert meta.task_params == list(TARGET_PARAMS)
    assert [list(b) for b in meta.trained.task_box] == box
    with np.load(tmp_path / "run" / "checkpoints" / "iter_0000" / "dataset.npz") as data:
        assert (data["value"] == 0).sum() >= 1  # goal anchors went in


def test_arm_whose_cost_does_not_vanish_at_the_goal_is_refused(tmp_path):
    cfg = load_dvp_config(
        write_cfg(
            tmp_path / "a.yaml",
            system={"kind": "arm", "config": str(IIWA), "set": ["ocp.costs.state_reg_q=1.0"]},
        )
    )
    with pytest.raises(VmpcError, match="grows without bound"):
        train_dvp(cfg, tmp_path / "run", progress=False)


def test_executor_that_cannot_start(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    cfg = load_dvp_config(write_cfg(tmp_path / "a.yaml", executor={"kind": "ray"}))
    with pytest.raises(
        VmpcError, match=r"executor 'ray' needs Ray: pip install 'value-mpc\[ray\]'"
    ):
        train_dvp(cfg, tmp_path / "run", progress=False)


@pytest.fixture
def small_value_map(monkeypatch):
    """The pendulum's value map on a 5 x 5 grid instead of 31 x 31 (961 long solves)."""
    from learning.dvp import plots

    monkeypatch.setattr(plots, "plot_value_map", functools.partial(plots.plot_value_map, n=5))


def test_cli_train_dvp_smoke(cli, tmp_path, small_value_map):
    # In this process (executor inline): the pools are what the determinism tests are about.
    cfg = write_cfg(tmp_path / "a.yaml", dvp={"iterations": 1}, executor={"kind": "inline"})
    code, stdout, stderr = cli("train", "dvp", "--config", cfg, "--out", tmp_path / "run", "-q")
    assert code == 0, stderr
    assert "vmpc train dvp: pendulum, 1 iterations" in stdout
    for name in ("config.yaml", "metrics.csv", "convergence.png", "value.pt", "value_map.png"):
        assert (tmp_path / "run" / name).exists(), name
    code, _, stderr = cli("train", "dvp", "--config", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: file not found" in stderr


def test_bench_sobolev_and_dvp_throughput_smoke(cli, tmp_path):
    cfg = write_cfg(tmp_path / "a.yaml")
    code, _, stderr = cli(
        "bench",
        "sobolev",
        "--config",
        cfg,
        "--sizes",
        "20",
        "40",
        "--steps",
        "10",
        "--out",
        tmp_path,
        "-q",
    )
    assert code == 0, stderr
    data = json.loads((tmp_path / "bench_sobolev_pendulum.json").read_text())
    assert [r["samples"] for r in data["rows"]] == [20, 40]
    assert all(0 < r["sobolev"] and 0 < r["plain"] for r in data["rows"])
    code, _, stderr = cli(
        "bench",
        "dvp",
        "--config",
        cfg,
        "--samples",
        "8",
        "--executors",
        "local",
        "--workers",
        "1",
        "--out",
        tmp_path,
    )
    assert code == 0, stderr
    rows = json.loads((tmp_path / "bench_dvp_pendulum.json").read_text())["rows"]
    # One worker: the two-worker pool path is the determinism test's (same executor code).
    assert [r["workers"] for r in rows] == [1] and all(r["ok"] == 8 for r in rows)
