"""End-to-end CLI smoke tests in subprocesses, with tiny budgets."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import IIWA, ROOT


def vmpc(*args, timeout=120, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vmpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_help_lists_the_verbs():
    proc = vmpc("--help")
    assert proc.returncode == 0
    for verb in ("sim", "bench"):
        assert verb in proc.stdout
    assert "--terminal" in vmpc("sim", "--help").stdout


def test_sim_writes_every_output(tmp_path):
    out = tmp_path / "run"
    proc = vmpc(
        "sim",
        "--config",
        str(IIWA),
        "--duration",
        "0.3",
        "--out",
        str(out),
        "--set",
        "disturbances.schedule=[{start: 0.1, duration: 0.05, force: [30, 0, 0]}]",
        "--record",
        str(tmp_path / "run.gif"),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert "real-time factor" in proc.stdout
    for name in (
        "config.yaml",
        "summary.json",
        "log.npz",
        "ee_position.png",
        "ee_error.png",
        "torques.png",
        "solve_time.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (tmp_path / "run.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sim_steps"] == 300 and summary["horizon"] == 10
    assert len(summary["recoveries"]) == 1
    log = np.load(out / "log.npz")
    for key in (
        "t",
        "q",
        "v",
        "tau",
        "ee_position",
        "target",
        "solve_ms",
        "iterations",
        "cost",
        "status",
        "force",
        "pushes",
    ):
        assert key in log.files, key
    assert log["q"].shape == (300, 7)
    # The resolved config reproduces the run's settings.
    proc2 = vmpc(
        "sim",
        "--config",
        str(out / "config.yaml"),
        "--duration",
        "0.05",
        "--out",
        str(tmp_path / "again"),
        "--no-plots",
        "-q",
    )
    assert proc2.returncode == 0, proc2.stderr


def test_gui_without_display_is_refused_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = vmpc("sim", "--gui", "--duration", "0.01", "--out", str(tmp_path / "x"), env=env)
    assert proc.returncode == 2
    assert "needs a display" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_record_format(tmp_path):
    proc = vmpc(
        "sim",
        "--duration",
        "0.01",
        "--record",
        str(tmp_path / "x.avi"),
        "--out",
        str(tmp_path / "x"),
    )
    assert proc.returncode == 2
    assert "unknown format '.avi'" in proc.stderr


def test_sigterm_stops_the_run_and_still_writes_outputs(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmpc",
            "sim",
            "--duration",
            "60",
            "--timing",
            "wallclock",
            "--out",
            str(out),
            "--no-plots",
            "-q",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["sim_steps"] < 60000
    assert "INTERRUPTED" in stdout


@pytest.mark.slow
def test_bench_mpc_prints_table_and_json(tmp_path):
    proc = vmpc(
        "bench", "mpc", "--horizons", "5", "10", "--replans", "30", "--out", str(tmp_path), "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio" in proc.stdout and "raw p50" in proc.stdout
    data = json.loads((tmp_path / "bench_mpc.json").read_text())
    assert [r["horizon"] for r in data["rows"]] == [5, 10]
    for r in data["rows"]:
        assert r["ratio_p50"] == pytest.approx(r["ours_ms_p50"] / r["raw_ms_p50"])
        assert r["real_time_factor"] > 0
