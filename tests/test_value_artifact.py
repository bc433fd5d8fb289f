"""The artifact contract: metadata, integrity, allowed folders, refusal of broken files."""

import json
import os
import zipfile

import numpy as np
import pytest

from mpc.config import load_config
from mpc.value.artifact import (
    FORMAT_VERSION,
    TARGET_PARAMS,
    ValueModelError,
    legacy_task_fingerprint,
    load_value_model,
    read_metadata,
    task_fingerprint,
)

from .conftest import IIWA, local_config, make_artifact


@pytest.fixture
def cfg():
    return load_config(IIWA)


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_roundtrip_metadata_and_weights(cfg, models):
    path = make_artifact(models / "v.pt", cfg, task_params=TARGET_PARAMS)
    meta = read_metadata(path)
    assert meta.format_version == FORMAT_VERSION
    assert meta.state.nx == 14 and meta.state.robot == "iiwa" and len(meta.state.joint_names) == 7
    assert meta.task_params == list(TARGET_PARAMS)
    assert meta.task_fingerprint == task_fingerprint(cfg, TARGET_PARAMS)
    assert meta.provenance.library_versions["crocoddyl"] == "3.2.1"
    assert meta.architecture.n_in == 17 and meta.architecture.hidden == [64, 64, 64]
    model = load_value_model("models/v.pt", ["models"])
    assert model.metadata == meta
    assert model.model_id == f"v.pt@{meta.weights_sha256[:8]}"
    assert all(a.dtype == np.float64 for a in model.arrays.values())


Q0 = "robot.q0=[0.2, 0.6, 0.0, -1.1, -0.5, 1.5, 0.1]"


def test_fingerprint_holds_the_posture_only_when_the_cost_pulls_toward_it(cfg):
    assert cfg.ocp.costs.state_reg_q == 0  # the shipped task: velocity-only regularisation
    assert task_fingerprint(load_config(IIWA, [Q0])) == task_fingerprint(cfg)
    pulled = ["ocp.costs.state_reg_q=1.0"]
    assert task_fingerprint(load_config(IIWA, [*pulled, Q0])) != task_fingerprint(
        load_config(IIWA, pulled)
    )
    # The old formula held it always; it stays recognisable for `vmpc value upgrade --config`.
    assert legacy_task_fingerprint(load_config(IIWA, [Q0])) != legacy_task_fingerprint(cfg)
    assert legacy_task_fingerprint(cfg) != task_fingerprint(cfg)


def test_upgrade_rewrites_a_legacy_fingerprint_without_running_the_file(cfg, models, cli):
    from mpc.value.artifact import load_value_model as load

    here = str(local_config(models.parent))  # loads values from models/ next to it
    legacy = legacy_task_fingerprint(cfg)
    make_artifact(models / "old.pt", cfg, fingerprint=legacy)
    before = load("models/old.pt", ["models"])
    code, out, err = cli("value", "check", "models/old.pt", "--config", here, cwd=models.parent)
    assert code != 0 and "vmpc value upgrade" in out + err and "--config" in out + err
    code, out, err = cli("value", "upgrade", "models/old.pt", "--config", here, cwd=models.parent)
    assert code == 0, err
    after = load("models/old.pt", ["models"])
    assert after.metadata.task_fingerprint == task_fingerprint(cfg)
    assert after.model_id == before.model_id  # the same weights
    assert all(np.array_equal(after.arrays[k], before.arrays[k]) for k in before.arrays)
    assert legacy in after.metadata.provenance.notes
    code, out, err = cli("value", "check", "models/old.pt", "--config", here, cwd=models.parent)
    assert code == 0 and "ACCEPTED" in out, out + err
    # Twice is refused with one line; so is a config the file was not trained for.
    code, _, err = cli("value", "upgrade", "models/old.pt", "--config", here, cwd=models.parent)
    assert code == 2 and "already current" in err and len(err.strip().splitlines()) == 1
    make_artifact(models / "other.pt", cfg, fingerprint="sha256:" + "2" * 64)
    code, _, err = cli("value", "upgrade", "models/other.pt", "--config", here, cwd=models.parent)
    assert code == 2 and "either formula" in err


def test_fingerprint_tracks_the_cost_not_the_horizon(cfg):
    base = task_fingerprint(cfg)
    assert task_fingerprint(load_config(IIWA, ["ocp.horizon=50"])) == base
    assert task_fingerprint(load_config(IIWA, ["ocp.costs.torque_reg=0.01"])) != base
    assert task_fingerprint(load_config(IIWA, ["task.target=[0.3, 0.3, 0.6]"])) != base
    # A value conditioned on the target serves every target.
    assert task_fingerprint(
        load_config(IIWA, ["task.target=[0.3, 0.3, 0.6]"]), TARGET_PARAMS
    ) == task_fingerprint(cfg, TARGET_PARAMS)


@pytest.mark.parametrize("where", ["../v.pt", "/tmp/../etc/v.pt", "elsewhere/v.pt"])
def test_paths_outside_allowed_folders_are_refused(cfg, models, where):
    with pytest.raises(ValueModelError, match="outside the allowed folders models/"):
        load_value_model(where, ["models"])


def test_symlink_out_of_the_allowed_folder_is_refused(cfg, models, tmp_path):
    outside = make_artifact(tmp_path / "outside.pt", cfg)
    os.symlink(outside, models / "link.pt")
    with pytest.raises(ValueModelError, match="outside the allowed folders"):
        load_value_model("models/link.pt", ["models"])


def test_truncated_file_is_refused(cfg, models):
    path = make_artifact(models / "v.pt", cfg)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueModelError, match="cannot load as TorchScript"):
        load_value_model("models/v.pt", ["models"])


def test_not_an_archive_is_refused(models):
    (models / "junk.pt").write_bytes(b"\x80\x04not a zip at all")
    with pytest.raises(ValueModelError, match="junk.pt: cannot load"):
        load_value_model("models/junk.pt", ["models"])
    with pytest.raises(ValueModelError, match="not a TorchScript archive"):
        read_metadata(models / "junk.pt")


def _rewrite_member(path, predicate, change):
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, blob in items:
            zout.writestr(info, change(blob) if predicate(info.filename) else blob)


@pytest.mark.parametrize(
    "member, reason",
    [
        (lambda n: n.endswith("extra/weights.safetensors"), "weights sha256 .* does not match"),
        (
            lambda n: "/data/" in n and not n.endswith(".pkl"),
            "TorchScript sha256 .* does not match",
        ),
    ],
    ids=["safetensors", "torchscript-data"],
)
def test_edited_weights_fail_the_sha256(cfg, models, member, reason):
    path = make_artifact(models / "v.pt", cfg)

    def flip(blob):
        b = bytearray(blob)
        b[len(b) - 8] ^= 0x40  # inside the tensor data, past any header
        return bytes(b)

    _rewrite_member(path, member, flip)
    with pytest.raises(ValueModelError, match=reason):
        load_value_model("models/v.pt", ["models"])


def test_edited_metadata_is_refused(cfg, models):
    path = make_artifact(models / "v.pt", cfg)

    def bump(blob):
        meta = json.loads(blob)
        meta["format_version"] = 99
        return json.dumps(meta).encode()

    _rewrite_member(path, lambda n: n.endswith("extra/metadata.json"), bump)
    with pytest.raises(ValueModelError, match="format version 99 is not supported"):
        read_metadata(path)
    with pytest.raises(ValueModelError, match="format version 99"):
        load_value_model("models/v.pt", ["models"])


def test_a_shipped_value_serves_a_changed_start_posture(cli, tmp_path):
    """As a new user would try it: another robot.q0 with the shipped model (the task's cost
    does not pull toward a posture, so the start configuration is not part of the task)."""
    code, out, err = cli(
        "sim", "--terminal", "models/iiwa_dvp.pt", "--set", Q0, "--duration", "0.05",
        "--no-plots", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["swaps"][0]["accepted"] and summary["swaps"][0]["model_id"].startswith(
        "iiwa_dvp.pt@abd05721"
    )
