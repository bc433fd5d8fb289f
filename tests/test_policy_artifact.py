"""The policy artifact (mpc/policy/artifact.py): the value artifact's container for warm-start
policies. Export and load without running the file, the numpy evaluator equal to the network,
one-line refusals naming the culprit, and `vmpc policy inspect|check`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from learning.export import (
    build_policy_metadata,
    export_policy,
    save_policy_artifact,
    script_policy,
)
from learning.networks import PolicyNet
from mpc.config import Config, load_config
from mpc.policy import (
    POLICY_FORMAT,
    ControlBox,
    PolicyModelError,
    load_policy_model,
    read_policy_metadata,
)
from mpc.robot_model import RobotModel, build_robot
from mpc.value.artifact import (
    FAMILY,
    TARGET_PARAMS,
    StateLayout,
    TrainedWith,
    ValueModelError,
    load_value_model,
    quiet_torchscript,
    read_metadata,
    task_fingerprint,
)

from .conftest import IIWA, local_config, make_artifact
from .test_value_artifact import _rewrite_member


class Iiwa(NamedTuple):
    cfg: Config
    robot: RobotModel


@pytest.fixture(scope="module")
def iiwa() -> Iiwa:
    cfg = load_config(IIWA)
    return Iiwa(cfg, build_robot(cfg)[1])


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """An allowed folder as the loader wants it: not writable by group or others. Paths are
    absolute, so no test depends on the working directory."""
    os.chmod(tmp_path, 0o755)
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    return folder


def _net(n_in: int, nu: int, activation: str = "relu", seed: int = 0) -> PolicyNet:
    """A random policy with a non-trivial normalisation and an asymmetric box."""
    torch.manual_seed(seed)
    steps = np.arange(1.0, nu + 1.0)
    net = PolicyNet(n_in, -10.0 * steps, 5.0 * steps, hidden=(32, 24), activation=activation)
    net.double()
    net.set_normalisation(torch.randn(n_in, dtype=torch.float64), torch.rand(n_in) + 0.5)
    return net


def _fields(iiwa: Iiwa, task_params=(), fingerprint=None) -> dict:
    cfg, robot = iiwa
    return {
        "state": StateLayout(robot=cfg.robot.name, joint_names=robot.joint_names, nx=2 * robot.nq),
        "task_params": list(task_params),
        "task_fingerprint": fingerprint or task_fingerprint(cfg, task_params),
        "algorithm": "test-random",
    }


def make_policy(path: Path, iiwa: Iiwa, *, task_params=(), fingerprint=None, **kw) -> PolicyNet:
    """A random policy for the iiwa task (``task_params`` after the state), exported to path."""
    net = _net(2 * iiwa.robot.nq + len(task_params), iiwa.robot.nq, **kw)
    export_policy(net, path, **_fields(iiwa, task_params, fingerprint))
    return net


def _one_line_error(exc_info, culprit: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and culprit in msg, msg
    return msg


# -- round trip --------------------------------------------------------------------------------
def test_export_then_load_round_trip(iiwa, models):
    trained = TrainedWith(dt=0.01, horizon=20, task_box=([0.3, -0.2, 0.4], [0.6, 0.2, 0.8]))
    cfg, robot = iiwa
    net = _net(2 * robot.nq + 3, robot.nq, activation="tanh")
    fields = _fields(iiwa, TARGET_PARAMS)
    written = export_policy(net, models / "p.pt", trained=trained, iterations=3, **fields)
    model = load_policy_model(models / "p.pt", [models])
    meta = model.metadata
    assert meta == written == read_policy_metadata(models / "p.pt")
    assert meta.format == POLICY_FORMAT and meta.format_version == 2 and meta.module_sha256
    assert meta.architecture.model_dump() == {
        "kind": "mlp", "n_in": 17, "hidden": [32, 24], "nu": 7, "activation": "tanh",
    }  # fmt: skip
    assert meta.control_box.u_lb == (-10.0 * np.arange(1, 8)).tolist()
    assert meta.task_params == list(TARGET_PARAMS) and meta.trained == trained
    assert meta.task_fingerprint == task_fingerprint(cfg, TARGET_PARAMS)
    assert meta.provenance.algorithm == "test-random" and meta.provenance.iterations == 3
    assert model.model_id == f"p.pt@{meta.weights_sha256[:8]}"
    assert (model.nx, model.nu) == (14, 7)
    sd = net.state_dict()
    assert set(model.arrays) == set(sd)
    assert all(np.array_equal(model.arrays[k], sd[k].numpy()) for k in sd)
    assert POLICY_FORMAT in FAMILY  # the value loader names a policy file it is given


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_evaluator_equals_the_network_and_its_jacobian_autograd(iiwa, models, activation):
    net = make_policy(models / "p.pt", iiwa, activation=activation, seed=3)
    ev = load_policy_model(models / "p.pt", [models]).evaluator()
    with quiet_torchscript():
        module = torch.jit.load(str(models / "p.pt"))  # our own file: its code may run here
    zs = np.random.default_rng(0).normal(0.0, 1.5, (8, net.n_in))
    for z in zs:
        zt = torch.from_numpy(z)
        u, du = ev.action_and_jacobian(z)
        with torch.no_grad():
            assert np.abs(u - net(zt).numpy()).max() < 1e-12
            assert np.abs(u - module(zt).numpy()).max() < 1e-12
        jac = torch.autograd.functional.jacobian(net, zt).numpy()
        assert du.shape == (7, 14) and np.abs(du - jac).max() < 1e-12
        assert np.array_equal(u, ev.action(z))
        assert ((u > ev.u_lb) & (u < ev.u_ub)).all()


# -- refusals ----------------------------------------------------------------------------------
def test_truncated_file_is_refused(iiwa, models):
    path = models / "p.pt"
    make_policy(path, iiwa)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyModelError) as exc:
        load_policy_model(models / "p.pt", [models])
    assert "cannot load as TorchScript archive" in _one_line_error(exc, str(models / "p.pt"))


def test_edited_weights_fail_the_hash(iiwa, models):
    path = models / "p.pt"
    make_policy(path, iiwa)

    def flip(blob):
        b = bytearray(blob)
        b[len(b) - 8] ^= 0x40  # inside the tensor data, past the header
        return bytes(b)

    _rewrite_member(path, lambda n: n.endswith("extra/weights.safetensors"), flip)
    with pytest.raises(PolicyModelError, match=r"weights sha256 .* does not match") as exc:
        load_policy_model(models / "p.pt", [models])
    _one_line_error(exc, str(models / "p.pt"))


def _edit_metadata(path, change):
    def edit(blob):
        meta = json.loads(blob)
        change(meta)
        return json.dumps(meta).encode()

    _rewrite_member(path, lambda n: n.endswith("extra/metadata.json"), edit)


def test_box_in_the_weights_must_be_the_metadatas(iiwa, models):
    path = models / "p.pt"
    make_policy(path, iiwa)
    _edit_metadata(path, lambda m: m["control_box"]["u_ub"].__setitem__(0, 50.0))
    with pytest.raises(PolicyModelError) as exc:
        load_policy_model(models / "p.pt", [models])
    msg = _one_line_error(exc, str(models / "p.pt"))
    assert "u_ub" in msg and "control_box.u_ub" in msg
    # The exporter refuses to write such a file at all.
    net = _net(14, 7)
    meta = build_policy_metadata(net, **_fields(iiwa))
    wider = meta.model_copy(
        update={"control_box": ControlBox(u_lb=meta.control_box.u_lb, u_ub=[50.0] * 7)}
    )
    with pytest.raises(ValueError, match="the loader refuses: .*control_box.u_ub"):
        save_policy_artifact(script_policy(net), wider, models / "q.pt")
    assert not (models / "q.pt").exists()


def test_a_value_file_is_not_a_policy_and_a_policy_file_is_not_a_value(iiwa, models):
    make_artifact(models / "v.pt", iiwa.cfg)
    make_policy(models / "p.pt", iiwa)
    with pytest.raises(PolicyModelError) as exc:
        load_policy_model(models / "v.pt", [models])
    assert "a value artifact (format 'vmpc-value'), not a vmpc-policy file" in _one_line_error(
        exc, str(models / "v.pt")
    )
    with pytest.raises(ValueModelError) as exc:
        load_value_model(models / "p.pt", [models])
    assert "a policy artifact (format 'vmpc-policy'), not a vmpc-value file" in _one_line_error(
        exc, str(models / "p.pt")
    )
    with pytest.raises(ValueModelError, match="vmpc policy inspect"):
        read_metadata(models / "p.pt")


def test_wrong_input_width_is_refused(iiwa, models):
    net = _net(17, 7)  # 3 inputs more than the state, no task parameters
    with pytest.raises(ValueError, match="network input 17 != nx 14 \\+ 0 task parameters"):
        export_policy(net, models / "w.pt", **_fields(iiwa))
    path = models / "p.pt"
    make_policy(path, iiwa)
    _edit_metadata(path, lambda m: m["state"].update(nx=12))
    with pytest.raises(PolicyModelError) as exc:
        load_policy_model(models / "p.pt", [models])
    assert "input width 14 != state 12 + 0 task parameters" in _one_line_error(
        exc, str(models / "p.pt")
    )


def test_folder_rules_are_the_values(iiwa, models):
    make_policy(models / "p.pt", iiwa)
    with pytest.raises(PolicyModelError, match="outside the allowed folders elsewhere/"):
        load_policy_model(models / "p.pt", ["elsewhere"], models.parent)
    os.chmod(models / "p.pt", 0o664)
    with pytest.raises(PolicyModelError, match="p.pt: writable by group or others"):
        load_policy_model(models / "p.pt", [models])


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_inspect_and_check(cli, iiwa, models):
    make_policy(models / "p.pt", iiwa, task_params=TARGET_PARAMS)
    here = models.parent
    inspect = cli("policy", "inspect", "models/p.pt", cwd=here)
    assert inspect.returncode == 0, inspect.stderr
    assert "vmpc-policy v2" in inspect.stdout and "control box" in inspect.stdout
    assert "target_x, target_y, target_z" in inspect.stdout
    raw = cli("policy", "inspect", "models/p.pt", "--json", cwd=here)
    assert json.loads(raw.stdout)["control_box"]["u_ub"][0] == 5.0
    check = cli("policy", "check", "models/p.pt", cwd=here)
    assert check.returncode == 0 and check.stdout.startswith("ok  p.pt@"), (
        check.stdout + check.stderr
    )
    config = str(local_config(here))  # value.allowed_dirs: [models], next to it
    checked = cli("policy", "check", "models/p.pt", "--config", config, "--states", "4", cwd=here)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok  p.pt@") and "task fingerprint" in checked.stdout


def test_cli_refusals_are_one_line_exit_2(cli, iiwa, models):
    here = models.parent
    config = str(local_config(here))
    make_policy(models / "other.pt", iiwa, fingerprint="sha256:" + "2" * 64)
    make_artifact(models / "v.pt", iiwa.cfg)
    for argv, says in [
        (("policy", "check", "models/other.pt", "--config", config), "task fingerprint"),
        (("policy", "inspect", "models/v.pt"), "a value artifact"),
        (("value", "inspect", "models/other.pt"), "a policy artifact"),
        (("policy", "check", "models/missing.pt"), "no such file"),
    ]:
        code, _, err = cli(*argv, cwd=here)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and says in lines[0], (argv, err)
