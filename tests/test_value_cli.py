"""CLI smoke tests of the value verbs, with tiny budgets."""

import json
import subprocess
import sys

import pytest
import yaml

from mpc.config import load_config

from .conftest import IIWA, ROOT
from .value_helpers import make_artifact


def vmpc(*args, cwd, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "vmpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_fit_inspect_check_and_sim_with_the_fitted_value(tmp_path):
    (tmp_path / "models").mkdir()
    fit = vmpc(
        "value",
        "fit",
        "--config",
        str(IIWA),
        "--out",
        "models/fit.pt",
        "--samples",
        "300",
        "--epochs",
        "3",
        "-q",
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr
    assert "wrote models/fit.pt" in fit.stdout
    inspect = vmpc("value", "inspect", "models/fit.pt", cwd=tmp_path)
    assert inspect.returncode == 0 and "task fingerprint" in inspect.stdout
    meta = json.loads(vmpc("value", "inspect", "models/fit.pt", "--json", cwd=tmp_path).stdout)
    assert meta["provenance"]["algorithm"] == "sobolev-fit:quadratic-terminal"
    assert meta["provenance"]["samples"] == 300
    check = vmpc("value", "check", "models/fit.pt", "--config", str(IIWA), cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("ACCEPTED"), (
        check.stdout + check.stderr
    )
    sim = vmpc(
        "sim",
        "--config",
        str(IIWA),
        "--terminal",
        "models/fit.pt",
        "--duration",
        "0.1",
        "--out",
        "run",
        "--no-plots",
        "-q",
        cwd=tmp_path,
    )
    assert sim.returncode == 0, sim.stderr
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["terminal"].startswith("fit.pt@") and summary["swaps"][0]["accepted"]


def test_check_refuses_with_reason_and_exit_1(tmp_path):
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/other.pt", load_config(IIWA), fingerprint="sha256:" + "2" * 64)
    proc = vmpc("value", "check", "models/other.pt", "--config", str(IIWA), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.startswith("REFUSED") and "task fingerprint" in proc.stdout
    forced = vmpc(
        "value", "check", "models/other.pt", "--config", str(IIWA), "--force", cwd=tmp_path
    )
    assert forced.returncode == 0 and "ACCEPTED (forced)" in forced.stdout


def test_sim_with_a_bad_terminal_path_is_one_line_exit_2(tmp_path):
    proc = vmpc(
        "sim",
        "--config",
        str(IIWA),
        "--terminal",
        "/etc/passwd",
        "--duration",
        "0.1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "outside the allowed folders" in lines[0], proc.stderr


def test_inspect_a_non_model(tmp_path):
    (tmp_path / "x.pt").write_text("hello")
    proc = vmpc("value", "inspect", "x.pt", cwd=tmp_path)
    assert proc.returncode == 2 and "not a TorchScript archive" in proc.stderr


def test_bench_value_prints_ratios(tmp_path):
    proc = vmpc(
        "bench",
        "value",
        "--config",
        str(IIWA),
        "--horizons",
        "5",
        "--iterations",
        "20",
        "--out",
        "bench",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "calcDiff us" in proc.stdout and "ratio" in proc.stdout
    data = json.loads((tmp_path / "bench/bench_value.json").read_text())
    row = data["rows"][0]
    assert row["horizon"] == 5 and row["ratio_fast"] == row["fast_ms_p50"] / row["quadratic_ms_p50"]


@pytest.mark.parametrize(
    "model, config",
    [
        ("iiwa_dvp", "iiwa_reach"),
        ("iiwa_dvp_targets", "iiwa_reach"),
        ("iiwa_dvp_short", "iiwa_reach_short"),
        ("iiwa_dvp_targets_short", "iiwa_reach_short"),
    ],
)
def test_shipped_values_pass_every_hot_swap_check_for_their_config(model, config):
    # The model is trained by configs/dvp_iiwa<suffix>.yaml, for the MPC config it is checked with.
    trainer = yaml.safe_load(
        (ROOT / "configs" / f"dvp_iiwa{model.removeprefix('iiwa_dvp')}.yaml").read_text()
    )
    assert trainer["system"]["config"] == f"{config}.yaml"
    proc = vmpc(
        "value", "check", f"models/{model}.pt", "--config", f"configs/{config}.yaml", cwd=ROOT
    )
    assert proc.returncode == 0 and "ACCEPTED" in proc.stdout, proc.stdout + proc.stderr
