"""Training files: damaged checkpoints fall back to the last intact iteration (and the redone
iterations match an uninterrupted run), ``--resume`` refuses a changed config, one trainer per
run folder (a real lock, released by kill -9), and seeds that cannot be negative."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from learning.checkpoint import CheckpointError, RunFolder, RunLocked
from learning.dvp.config import load_dvp_config
from learning.dvp.executors import Executor, build_system
from learning.dvp.trainer import ConfigMismatch, train_dvp
from learning.executors import InlineExecutor
from mpc.errors import ConfigError, VmpcError

from .test_dvp import assert_same_files, run_files, write_cfg

CARTPOLE = {
    "system": {"kind": "cartpole"},
    "dvp": {"samples": 6},
    "validation": {"samples": 4},
    "executor": {"workers": 1},
}


def inline_executor(spec, system_json: str) -> Executor:
    """The solves in this process: the checkpoint logic is what is under test here, and the
    dataset does not depend on the executor (test_dvp checks that with real pools)."""
    return Executor(InlineExecutor(build_system, system_json))


def _fast(mp: pytest.MonkeyPatch) -> None:
    from learning.dvp import plots, trainer

    mp.setattr(trainer, "make_executor", inline_executor)
    mp.setattr(plots, "plot_convergence", lambda *a, **k: None)  # ~1 s a figure


@pytest.fixture
def fast(monkeypatch):
    _fast(monkeypatch)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """An uninterrupted three-iteration run of the tiny cartpole config."""
    tmp = tmp_path_factory.mktemp("ckpt_reference")
    with pytest.MonkeyPatch.context() as mp:
        _fast(mp)
        cfg = load_dvp_config(write_cfg(tmp / "a.yaml", **CARTPOLE))
        train_dvp(cfg, tmp / "run", progress=False)
    return tmp / "run", run_files(tmp / "run")


def copy_run(reference, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def resume(out: Path, tmp_path: Path, **changes) -> list[str]:
    lines: list[str] = []
    sections = {k: dict(v) for k, v in CARTPOLE.items()}
    for k, v in changes.items():
        sections.setdefault(k, {}).update(v)
    cfg = load_dvp_config(write_cfg(tmp_path / "b.yaml", **sections))
    train_dvp(cfg, out, resume=True, progress=False, log=lines.append)
    return lines


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(max(64, path.stat().st_size)))


ITERATION_FILES = [
    "model.pt",
    "optim.pt",
    "torch_rng.pt",
    "dataset.npz",
    "rng.json",
    "metrics.json",
]


@pytest.mark.parametrize("damage", [truncate, garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize("name", ITERATION_FILES)
def test_damaged_file_is_one_line_naming_it(reference, tmp_path, name, damage):
    out = copy_run(reference, tmp_path)
    damage(out / "checkpoints" / "iter_0001" / name)
    (out / "checkpoints" / "iter_0001" / "manifest.json").unlink()  # the parser must see it
    run = RunFolder(out)
    try:
        with pytest.raises(CheckpointError) as info:
            run.load_iteration(1)
        assert isinstance(info.value, VmpcError)
        message = str(info.value)
        assert f"iter_0001/{name}" in message and "\n" not in message
        assert run.intact()[0] == 1
    finally:
        run.close()


@pytest.mark.parametrize("name", ITERATION_FILES)
def test_resume_past_a_damaged_iteration_redoes_it_from_its_predecessors_rng(
    reference, tmp_path, fast, name
):
    out = copy_run(reference, tmp_path)
    garbage(out / "checkpoints" / "iter_0001" / name)
    lines = resume(out, tmp_path)
    assert len(lines) == 1 + 2, lines  # the fall-back line, then one per iteration redone
    assert "unreadable checkpoint" in lines[0] and f"iter_0001/{name}" in lines[0]
    assert f"resuming {out} after iteration 0, the last intact one" in lines[0]
    assert_same_files(reference[1], run_files(out))  # the RNG replay makes it exact
    assert json.loads((out / "state.json").read_text()) == {"completed": 3}
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


def test_a_change_that_still_parses_is_caught_by_the_manifest(reference, tmp_path, fast):
    out = copy_run(reference, tmp_path)
    path = out / "checkpoints" / "iter_0002" / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "samples": metrics["samples"] + 1}))
    lines = resume(out, tmp_path)
    assert any("iter_0002/metrics.json" in ln and "manifest" in ln for ln in lines), lines
    assert_same_files(reference[1], run_files(out))


def test_damaged_state_json_falls_back_on_the_iteration_folders(reference, tmp_path, fast):
    out = copy_run(reference, tmp_path)
    (out / "state.json").write_text('{"completed": ')
    shutil.rmtree(out / "checkpoints" / "iter_0002")  # as if killed before iteration 2 ended
    cfg = load_dvp_config(write_cfg(tmp_path / "a.yaml", **CARTPOLE))
    with pytest.raises(VmpcError, match=r"state\.json: unreadable checkpoint file") as info:
        train_dvp(cfg, out, progress=False)  # without --resume: one line, use --resume
    assert "--resume" in str(info.value) and "\n" not in str(info.value)
    lines = resume(out, tmp_path)
    assert any("state.json" in ln and "after iteration 1" in ln for ln in lines), lines
    assert_same_files(reference[1], run_files(out))


@pytest.mark.parametrize("damage", [truncate, garbage], ids=["truncated", "garbage"])
def test_damaged_validation_set_is_computed_again(reference, tmp_path, fast, damage):
    out = copy_run(reference, tmp_path)
    damage(out / "checkpoints" / "validation.npz")
    garbage(out / "checkpoints" / "iter_0002" / "model.pt")
    lines = resume(out, tmp_path)
    assert any("validation.npz" in ln and "again" in ln for ln in lines), lines
    assert_same_files(reference[1], run_files(out))


def test_resume_refuses_a_changed_config_and_names_the_keys(reference, tmp_path, fast, cli):
    out = copy_run(reference, tmp_path)
    before = run_files(out)
    with pytest.raises(ConfigMismatch) as info:
        resume(out, tmp_path, dvp={"samples": 7}, fit={"lr": 1e-3})
    message = str(info.value)
    assert "dvp.samples (6 -> 7)" in message and "fit.lr (0.003 -> 0.001)" in message
    assert "executor.* and dvp.iterations may change" in message and "\n" not in message
    # The CLI: one line, exit 2, nothing in the folder touched.
    changed = write_cfg(tmp_path / "c.yaml", **{**CARTPOLE, "network": {"hidden": [8]}})
    code, _, stderr = cli("train", "dvp", "--config", changed, "--out", out, "--resume", "-q")
    assert (
        code == 2 and stderr.count("\n") == 1 and "network.hidden ([64, 64, 64] -> [8])" in stderr
    )
    assert_same_files(before, run_files(out))
    # Where the solves run, and running on further, may change.
    lines = resume(out, tmp_path, executor={"workers": 2, "chunk": 5}, dvp={"iterations": 4})
    assert lines[0] == f"resuming {out} after iteration 2"
    assert json.loads((out / "state.json").read_text()) == {"completed": 4}
    with pytest.raises(ConfigMismatch, match="cannot shorten it to dvp.iterations=2"):
        resume(out, tmp_path, dvp={"iterations": 2})


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_one_trainer_per_run_folder_and_kill_9_releases_the_lock(tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(RunLocked) as info:
            RunFolder(out)
        assert f"{out} is in use by another trainer (pid {holder.pid}" in str(info.value)
        cfg = write_cfg(tmp_path / "a.yaml", **CARTPOLE)
        code, _, stderr = cli("train", "dvp", "--config", cfg, "--out", out, "-q")
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert f"pid {holder.pid}" in stderr and str(out) in stderr
        assert not (out / "config.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    with RunFolder(out) as run:  # the kernel dropped the dead holder's lock
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            RunFolder(out)  # a second trainer in this process is refused too
        assert run.completed() == 0
    RunFolder(out).close()  # released on close


def test_lock_is_released_when_training_fails(tmp_path, fast):
    cfg = load_dvp_config(write_cfg(tmp_path / "a.yaml", **CARTPOLE))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text('{"completed": 1}')
    with pytest.raises(VmpcError, match="already holds 1 DVP iteration"):
        train_dvp(cfg, tmp_path / "run", progress=False)
    RunFolder(tmp_path / "run").close()


def test_iteration_rename_and_state_are_fsynced(tmp_path, monkeypatch):
    import learning.checkpoint as ck

    synced: list[Path] = []
    real = ck.fsync_dir
    monkeypatch.setattr(ck, "fsync_dir", lambda p: (synced.append(Path(p)), real(p))[1])
    with RunFolder(tmp_path / "run") as run:
        synced.clear()
        run.save_iteration(
            0,
            dataset={"z": np.zeros((2, 3)), "value": np.zeros(2), "grad_x": np.zeros((2, 2))},
            model={"w": torch.zeros(2)},
            optim={"state": {}, "param_groups": []},
            rng=dict(np.random.default_rng(0).bit_generator.state),
            torch_rng=torch.get_rng_state(),
            metrics={"samples": 2},
        )
        assert synced[-1] == run.ckpt  # after the rename into iter_0000
        assert run.completed() == 1 and run.intact() == (1, None)


# -- seeds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, key",
    [({"seed": -1}, "seed"), ({"validation": {"samples": 4, "seed": -3}}, "validation.seed")],
)
def test_negative_dvp_seeds_are_config_errors(tmp_path, changes, key):
    path = write_cfg(tmp_path / "a.yaml")
    raw = {**yaml.safe_load(path.read_text()), **changes}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"{key}: Input should be greater than or equal to 0"):
        load_dvp_config(path)


@pytest.mark.parametrize("key", ["disturbances.random.seed", "mismatch.seed"])
def test_negative_sim_seeds_are_config_errors(key):
    from mpc.config import load_config

    from .conftest import IIWA

    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        load_config(IIWA, [f"{key}=-1"])


@pytest.mark.parametrize(
    "argv",
    [
        ("value", "fit", "--seed", "-1", "--out", "x.pt"),
        ("eval", "horizons", "--value", "v.pt", "--seed", "-5"),
    ],
)
def test_negative_cli_seeds_are_one_line_and_exit_2(cli, tmp_path, argv):
    code, stdout, stderr = cli(*argv, cwd=tmp_path)
    assert code == 2 and stderr.count("\n") == 1 and "--seed must be" in stderr, stderr
    assert not list(tmp_path.iterdir())
