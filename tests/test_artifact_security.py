"""Value artifacts as hostile input (issue 10): format 2 loads without running the file, every
cap and check refuses with one line, the TorchScript evaluator and `vmpc value upgrade` run a
file only when it is trusted, and a model whose TorchScript writes a file when loaded is checked
and swapped without that file ever being written."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from learning.export import build_metadata, export_value, save_artifact
from learning.networks import ResidualValueNet
from mpc.config import load_config
from mpc.loop import ClosedLoop
from mpc.robot_model import build_robot
from mpc.value import artifact
from mpc.value.artifact import (
    METADATA_FILE,
    TRUST_MANIFEST,
    StateLayout,
    ValueModelError,
    file_sha256,
    load_value_model,
    quiet_torchscript,
    read_metadata,
    task_fingerprint,
)

from .conftest import IIWA, make_artifact


class Trap(torch.nn.Module):
    """A submodule whose TorchScript ``__setstate__`` (run by ``torch.jit.load``) writes a
    file: the attack of issue 10. It has no weights, so the value's state dict is unchanged."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), state[0])


@pytest.fixture(scope="module")
def cfg():
    return load_config(IIWA)


@pytest.fixture(scope="module")
def robot(cfg):
    return build_robot(cfg)[1]


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.chmod(tmp_path, 0o755)
    (tmp_path / "models").mkdir(mode=0o755)
    return tmp_path / "models"


def _state(cfg, robot):
    return StateLayout(robot=cfg.robot.name, joint_names=robot.joint_names, nx=2 * robot.nq)


def _export(net, path, cfg, robot):
    return export_value(
        net,
        path,
        state=_state(cfg, robot),
        task_params=[],
        task_fingerprint=task_fingerprint(cfg),
        algorithm="test",
    )


def _write_v1(net, path, cfg, robot):
    """A format-1 artifact as the old exporter wrote it: TorchScript + metadata.json only."""
    net = net.double().eval()
    meta = build_metadata(
        net,
        state=_state(cfg, robot),
        task_params=[],
        task_fingerprint=task_fingerprint(cfg),
        algorithm="test-v1",
    ).model_copy(update={"format_version": 1})
    with quiet_torchscript():
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: meta.model_dump_json()})
    return path


def _rewrite(path, change_member=None, add=()):
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, blob in items:
            if change_member is not None:
                info, blob = change_member(info, blob)
            zout.writestr(info, blob)
        for name, blob, compression in add:
            zout.writestr(name, blob, compress_type=compression)


def _trap_net(target):
    torch.manual_seed(0)
    net = ResidualValueNet(14).double()
    net.trap = Trap(str(target))
    return net


# -- format 2 --------------------------------------------------------------------------------------
def test_v2_round_trip_runs_no_torchscript_and_stays_a_torchscript_file(cfg, models, monkeypatch):
    path = make_artifact(models / "v.pt", cfg)
    meta = read_metadata(path)
    assert meta.format_version == 2 and meta.module_sha256
    with zipfile.ZipFile(path) as zf:
        assert any(n.endswith("extra/weights.safetensors") for n in zf.namelist())

    def no_jit(*_a, **_k):
        raise AssertionError("the default load ran torch.jit.load")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    model = load_value_model("models/v.pt", ["models"])
    assert model.metadata == meta and not model.trusted
    with pytest.raises(ValueModelError, match="not trusted"):
        _ = model.module
    monkeypatch.undo()
    # Users keep torch.jit.load(path)(z) and value_and_derivatives, with the same weights.
    with quiet_torchscript():
        module = torch.jit.load(str(path))
    z = torch.zeros(14, dtype=torch.float64)
    with torch.no_grad():
        v, _, _ = module.value_and_derivatives(z)
        assert float(module(z.unsqueeze(0))[0]) == pytest.approx(float(v), abs=1e-12)
    sd = {k: t.detach().numpy() for k, t in module.state_dict().items()}
    assert all(np.array_equal(sd[k], model.arrays[k]) for k in sd)


def test_v1_file_is_refused_with_the_upgrade_command(cfg, robot, models):
    torch.manual_seed(0)
    _write_v1(ResidualValueNet(14), models / "old.pt", cfg, robot)
    with pytest.raises(ValueModelError, match="format version 1.*vmpc value upgrade models/old.pt"):
        load_value_model("models/old.pt", ["models"])
    assert read_metadata(models / "old.pt").format_version == 1  # inspect still reads it


# -- caps ----------------------------------------------------------------------------------------
def test_oversized_file_is_refused_before_reading(models):
    with open(models / "big.pt", "wb") as fh:
        fh.truncate(artifact.MAX_FILE_BYTES + 1)  # sparse: nothing to read
    with pytest.raises(ValueModelError, match="over the .*-byte cap"):
        load_value_model("models/big.pt", ["models"])


def test_too_many_members_is_refused(cfg, models):
    path = make_artifact(models / "v.pt", cfg)
    _rewrite(path, add=[(f"archive/pad/{i}", b"x", zipfile.ZIP_STORED) for i in range(300)])
    with pytest.raises(ValueModelError, match="archive members, over the 256 cap"):
        load_value_model("models/v.pt", ["models"])


def test_oversized_member_is_refused(cfg, models, monkeypatch):
    path = make_artifact(models / "v.pt", cfg)
    monkeypatch.setattr(artifact, "MAX_MEMBER_BYTES", 50_000)  # the weights are ~90 KB
    with pytest.raises(ValueModelError, match="weights.safetensors is .* bytes, over the"):
        load_value_model(path, ["models"])


def test_large_compressed_member_is_refused(cfg, models):
    """A deflated member that inflates past the cap (a zip bomb in miniature)."""
    path = make_artifact(models / "v.pt", cfg)
    _rewrite(path, add=[("archive/bomb", b"\0" * 2_000_000, zipfile.ZIP_DEFLATED)])
    assert os.path.getsize(path) < 300_000
    with pytest.raises(ValueModelError, match="bomb is compressed and 2000000 bytes"):
        load_value_model("models/v.pt", ["models"])


def test_metadata_sizes_that_disagree_with_the_tensors_allocate_nothing(cfg, models):
    path = make_artifact(models / "v.pt", cfg)

    def inflate(info, blob):
        if info.filename.endswith("extra/metadata.json"):
            meta = json.loads(blob)
            meta["architecture"]["hidden"] = [10**9, 64, 64]
            blob = json.dumps(meta).encode()
        return info, blob

    _rewrite(path, inflate)
    tracemalloc.start()
    try:
        with pytest.raises(ValueModelError, match="tensor layers.0.weight is F64 \\[64, 14\\]"):
            load_value_model("models/v.pt", ["models"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak


def test_edited_weights_hash_is_refused(cfg, models):
    path = make_artifact(models / "v.pt", cfg)

    def rehash(info, blob):
        if info.filename.endswith("extra/metadata.json"):
            meta = json.loads(blob)
            meta["weights_sha256"] = "0" * 64
            blob = json.dumps(meta).encode()
        return info, blob

    _rewrite(path, rehash)
    with pytest.raises(ValueModelError, match="weights sha256 .* does not match the metadata's"):
        load_value_model("models/v.pt", ["models"])


# -- folders and files -----------------------------------------------------------------------------
def test_group_writable_file_and_folder_are_refused(cfg, models):
    path = make_artifact(models / "v.pt", cfg)
    os.chmod(path, 0o664)
    with pytest.raises(ValueModelError, match="v.pt: writable by group or others"):
        load_value_model("models/v.pt", ["models"])
    os.chmod(path, 0o644)
    os.chmod(models, 0o777)
    try:
        with pytest.raises(ValueModelError, match="folder .*models is writable by group or others"):
            load_value_model("models/v.pt", ["models"])
    finally:
        os.chmod(models, 0o755)
    load_value_model("models/v.pt", ["models"])


def test_symlink_out_of_the_allowed_folder_is_refused(cfg, models, tmp_path):
    outside = make_artifact(tmp_path / "outside.pt", cfg)
    os.symlink(outside, models / "link.pt")
    with pytest.raises(ValueModelError, match="outside the allowed folders models/"):
        load_value_model("models/link.pt", ["models"])


def test_allowed_dirs_resolve_against_the_config_folder(cfg, models, tmp_path):
    path = make_artifact(models / "v.pt", cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    assert load_value_model(path, ["models"], [tmp_path]).model_id.startswith("v.pt@")
    with pytest.raises(ValueModelError, match="outside the allowed folders"):
        load_value_model(path, ["models"], [elsewhere])


def test_the_working_directory_is_not_an_allowed_folder(cli, cfg, models, tmp_path):
    """Run from a folder that has its own models/: the shipped config allows ../models from
    itself, never ./models from wherever the command runs."""
    make_artifact(models / "v.pt", cfg)
    code, out, err = cli("value", "check", "models/v.pt", "--config", IIWA, cwd=tmp_path)
    assert code == 1 and "outside the allowed folders" in out, out + err
    # A run's config.yaml names the allowed folders absolute: it loads the same from anywhere.
    from mpc.config import dump_config

    (tmp_path / "runs").mkdir()
    dumped = tmp_path / "runs" / "config.yaml"
    dumped.write_text(dump_config(cfg))
    again = load_config(dumped)
    assert again.value.allowed_dirs == [str(IIWA.parent.parent / "models")]
    assert again.model_dump() == cfg.model_dump() | {"value": again.value.model_dump()}


# -- trust ---------------------------------------------------------------------------------------
def test_torchscript_evaluator_runs_only_trusted_files(cli, cfg, models):
    path = make_artifact(models / "v.pt", cfg)
    sets = ["--set", f"value.allowed_dirs=[{models}]", "--set", "value.evaluator=torchscript"]
    sets += ["--set", "value.max_call_us=1e6"]  # TorchScript's first calls may be slow
    check = ("value", "check", "models/v.pt", "--config", IIWA)
    refused = cli(*check, *sets, cwd=models.parent)
    assert refused.returncode == 1 and "REFUSED" in refused.stdout
    assert "is not trusted" in refused.stdout
    sha = file_sha256(path)
    by_config = cli(*check, *sets, "--set", f"value.trusted_sha256=['{sha}']", cwd=models.parent)
    assert by_config.returncode == 0 and by_config.stdout.startswith("ACCEPTED"), by_config.stdout
    (models / TRUST_MANIFEST).write_text(f"{sha}  v.pt\n")
    by_manifest = cli(*check, *sets, cwd=models.parent)
    assert by_manifest.returncode == 0, by_manifest.stdout
    # A manifest others may write trusts nothing.
    os.chmod(models / TRUST_MANIFEST, 0o666)
    assert cli(*check, *sets, cwd=models.parent).returncode == 1


# -- a file that writes a file when its TorchScript is loaded -------------------------------------
def test_trap_file_is_checked_and_swapped_without_running(cli, cfg, robot, models, tmp_path):
    pwned = tmp_path / "pwned"
    trap = _trap_net(pwned)
    meta = build_metadata(
        trap,
        state=_state(cfg, robot),
        task_params=[],
        task_fingerprint=task_fingerprint(cfg),
        algorithm="trap",
    )
    with quiet_torchscript():
        save_artifact(torch.jit.script(trap), meta, models / "trap.pt")  # no deepcopy: eager
        # __setstate__ would run the trap in this process
    _write_v1(_trap_net(pwned), models / "trap_v1.pt", cfg, robot)
    assert not pwned.exists()
    allowed = f"value.allowed_dirs=[{models}]"
    # The fast path takes the weights only: the check accepts it (it is a fine value).
    check_trap = ("value", "check", "models/trap.pt", "--config", IIWA)
    ok = cli(*check_trap, "--set", allowed, cwd=models.parent)
    assert ok.returncode == 0 and ok.stdout.startswith("ACCEPTED"), ok.stdout + ok.stderr
    old = cli(
        "value", "check", "models/trap_v1.pt", "--config", IIWA, "--set", allowed, cwd=models.parent
    )
    assert old.returncode == 1 and "vmpc value upgrade" in old.stdout
    ts_set = "value.evaluator=torchscript"
    ts = cli(*check_trap, "--set", allowed, "--set", ts_set, cwd=models.parent)
    assert ts.returncode == 1 and "not trusted" in ts.stdout
    up = cli("value", "upgrade", "models/trap_v1.pt", cwd=models.parent)
    assert up.returncode == 2 and "pass --trust" in up.stderr
    inspect = cli("value", "inspect", "models/trap_v1.pt", cwd=models.parent)
    assert inspect.returncode == 0 and "run `vmpc value upgrade" in inspect.stdout
    # A swap in a running loop.
    swaps = (
        "value.swaps=[{t: 0.05, terminal: 'models/trap.pt'}, "
        "{t: 0.1, terminal: 'models/trap_v1.pt'}]"
    )
    run_cfg = load_config(IIWA, ["run.duration=0.15", "disturbances.schedule=[]", allowed, swaps])
    with ClosedLoop(run_cfg) as loop:
        result = loop.run(progress=False)
    a, b = result.summary.swaps
    assert a["accepted"] and a["model_id"].startswith("trap.pt@")
    assert not b["accepted"] and "vmpc value upgrade" in b["reason"]
    assert not pwned.exists()
    # Control: the trap is real; loading the TorchScript does write the file.
    with quiet_torchscript():
        torch.jit.load(str(models / "trap.pt"))
    assert pwned.exists()


def test_upgrade_needs_trust_and_keeps_weights_and_fingerprint(cli, cfg, robot, models):
    torch.manual_seed(3)
    _write_v1(ResidualValueNet(14), models / "old.pt", cfg, robot)
    before = read_metadata(models / "old.pt")
    refused = cli("value", "upgrade", "models/old.pt", "--out", "models/new.pt", cwd=models.parent)
    assert refused.returncode == 2 and "runs its TorchScript" in refused.stderr
    assert not (models / "new.pt").exists()
    done = cli(
        "value", "upgrade", "models/old.pt", "--out", "models/new.pt", "--trust", cwd=models.parent
    )
    assert done.returncode == 0, done.stderr
    after = read_metadata(models / "new.pt")
    assert after.format_version == 2
    assert after.weights_sha256 == before.weights_sha256
    assert after.task_fingerprint == before.task_fingerprint
    assert load_value_model("models/new.pt", ["models"]).model_id.endswith(
        before.weights_sha256[:8]
    )
    # Trusted by the manifest instead of --trust: in place.
    (models / TRUST_MANIFEST).write_text(f"{file_sha256(models / 'old.pt')}  old.pt\n")
    assert cli("value", "upgrade", "models/old.pt", cwd=models.parent).returncode == 0
    assert read_metadata(models / "old.pt").format_version == 2
    inspect = cli("value", "inspect", "models/old.pt", cwd=models.parent)
    assert "format 1" not in inspect.stdout


# -- validation over a state set -----------------------------------------------------------------
def test_value_finite_at_the_current_state_but_inf_elsewhere_is_refused(cli, cfg, robot, models):
    """One tanh unit saturated (exactly) at x0 on joint 1: r = 1e160 (h - 1) is 0 there with a
    zero Jacobian, and overflows V = r^2 as soon as q1 moves 0.05 rad below x0."""
    x0 = np.concatenate([cfg.robot.q0, np.zeros(7)])
    net = ResidualValueNet(14, hidden=(4,), residual_dim=1).double()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.in_mean.copy_(torch.from_numpy(x0))
        net.layers[0].weight[0, 0] = 1000.0
        net.layers[0].bias[0] = 50.0
        net.out.weight[0, 0] = 1e160
        net.out.bias[0] = -1e160
    _export(net, models / "cliff.pt", cfg, robot)
    allowed = f"value.allowed_dirs=[{models}]"
    proc = cli(
        "value", "check", "models/cliff.pt", "--config", IIWA, "--set", allowed, cwd=models.parent
    )
    assert proc.returncode == 1, proc.stdout
    assert "not finite at validation state" in proc.stdout, proc.stdout
    assert "at the current state" not in proc.stdout


def test_the_shipped_manifest_trusts_every_shipped_model():
    """models/TRUSTED.sha256 is part of the repository and matches the files it names, so the
    TorchScript evaluator works on a fresh clone."""
    import hashlib
    import subprocess

    from .conftest import ROOT

    tracked = subprocess.run(
        ["git", "ls-files", "models"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "models/TRUSTED.sha256" in tracked
    listed = {}
    for line in (ROOT / "models/TRUSTED.sha256").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()[:2]
            listed[name.lstrip("*")] = digest
    shipped = [p for p in tracked if p.endswith(".pt")]
    assert shipped
    for path in shipped:
        name = path.split("/")[-1]
        assert listed.get(name) == hashlib.sha256((ROOT / path).read_bytes()).hexdigest(), name
