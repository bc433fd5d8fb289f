"""CLI tests of the value verbs with tiny budgets: in-process, plus one real subprocess for the
``vmpc value`` entry point."""

import json

import numpy as np
import pytest
import yaml

from mpc.config import load_config

from .conftest import IIWA, ROOT, local_config, make_artifact, vmpc_subprocess


def test_fit_inspect_check_and_sim_with_the_fitted_value(cli, tmp_path):
    (tmp_path / "models").mkdir()
    here = str(local_config(tmp_path))  # value.allowed_dirs: [models], next to it
    fit = cli(
        "value",
        "fit",
        "--config",
        here,
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
    inspect = cli("value", "inspect", "models/fit.pt", cwd=tmp_path)
    assert inspect.returncode == 0 and "task fingerprint" in inspect.stdout
    # The `vmpc value` entry point, for real.
    proc = vmpc_subprocess("value", "inspect", "models/fit.pt", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["provenance"]["algorithm"] == "sobolev-fit:quadratic-terminal"
    assert meta["provenance"]["samples"] == 300
    check = cli("value", "check", "models/fit.pt", "--config", here, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("ACCEPTED"), (
        check.stdout + check.stderr
    )
    sim = cli(
        "sim",
        "--config",
        here,
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


def test_check_refuses_with_reason_and_exit_1(cli, tmp_path):
    (tmp_path / "models").mkdir()
    here = str(local_config(tmp_path))  # value.allowed_dirs: [models], next to it
    make_artifact(tmp_path / "models/other.pt", load_config(IIWA), fingerprint="sha256:" + "2" * 64)
    proc = cli("value", "check", "models/other.pt", "--config", here, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.startswith("REFUSED") and "task fingerprint" in proc.stdout
    forced = cli("value", "check", "models/other.pt", "--config", here, "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "ACCEPTED (forced)" in forced.stdout


def test_sim_with_a_bad_terminal_path_is_one_line_exit_2(cli, tmp_path):
    proc = cli(
        "sim",
        "--config",
        IIWA,
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
    assert not (tmp_path / "run").exists()


def test_inspect_a_non_model(cli, tmp_path):
    (tmp_path / "x.pt").write_text("hello")
    proc = cli("value", "inspect", "x.pt", cwd=tmp_path)
    assert proc.returncode == 2 and "not a TorchScript archive" in proc.stderr


def test_bench_value_prints_ratios(cli, tmp_path):
    proc = cli(
        "bench",
        "value",
        "--config",
        IIWA,
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
    (row,) = data["rows"]
    assert row["horizon"] == 5
    times = [v for k, v in row.items() if k.endswith("_ms_p50")]
    assert len(times) == 6 and all(np.isfinite(t) and t > 0 for t in times)
    # The table prints the figures of the JSON, both ratios of both tables.
    for key in ("ratio_fast", "ratio_torchscript", "ratio_fast_warm", "ratio_torchscript_warm"):
        assert np.isfinite(row[key]) and f"{row[key]:>6.2f}x" in proc.stdout, key


@pytest.mark.parametrize(
    "model, config",
    [
        ("iiwa_dvp", "iiwa_reach"),
        ("iiwa_dvp_targets", "iiwa_reach"),
        ("iiwa_dvp_short", "iiwa_reach_short"),
        ("iiwa_dvp_targets_short", "iiwa_reach_short"),
    ],
)
def test_shipped_values_pass_every_hot_swap_check_for_their_config(cli, model, config):
    # The model is trained by configs/dvp_iiwa<suffix>.yaml, for the MPC config it is checked with.
    trainer = yaml.safe_load(
        (ROOT / "configs" / f"dvp_iiwa{model.removeprefix('iiwa_dvp')}.yaml").read_text()
    )
    assert trainer["system"]["config"] == f"{config}.yaml"
    proc = cli("value", "check", f"models/{model}.pt", "--config", f"configs/{config}.yaml")
    assert proc.returncode == 0 and "ACCEPTED" in proc.stdout, proc.stdout + proc.stderr
