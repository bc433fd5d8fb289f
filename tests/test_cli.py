"""CLI tests with tiny budgets: in-process through ``vmpc.cli.main``, plus one real subprocess
each for ``vmpc sim`` and ``vmpc bench`` and the SIGTERM of a running sim."""

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading

import numpy as np
import pytest

from .conftest import IIWA, ROOT, vmpc_subprocess, wait_until


def test_help_lists_the_verbs(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for verb in ("sim", "bench", "value", "train"):
        assert verb in out
    assert "--terminal" in cli("sim", "--help").stdout


def test_sim_writes_every_output(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = cli(
        "sim",
        "--config",
        IIWA,
        "--duration",
        "0.3",
        "--out",
        out,
        "--set",
        "disturbances.schedule=[{start: 0.1, duration: 0.05, force: [30, 0, 0]}]",
        "--record",
        tmp_path / "run.gif",
        "-q",
    )
    assert code == 0, stderr
    assert "real-time factor" in stdout
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
    # The resolved config reproduces the run's settings: the `vmpc sim` entry point, for real.
    proc = vmpc_subprocess(
        "sim",
        "--config",
        out / "config.yaml",
        "--duration",
        "0.05",
        "--out",
        tmp_path / "again",
        "--no-plots",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["sim_steps"] == 50
    for key in ("horizon", "dt", "robot", "terminal", "timing", "replan_every"):
        assert again[key] == summary[key], key


def test_gui_without_display_is_refused_cleanly(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, stderr = cli("sim", "--gui", "--duration", "0.01", "--out", tmp_path / "x")
    assert code == 2
    assert "needs a display" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "x").exists()


def test_unknown_record_format(cli, tmp_path):
    code, _, stderr = cli(
        "sim", "--duration", "0.01", "--record", tmp_path / "x.avi", "--out", tmp_path / "x"
    )
    assert code == 2
    assert "unknown format '.avi'" in stderr


def _sim_seconds_shown(bar: bytes) -> float:
    """The largest simulated time the progress bar has drawn so far."""
    shown = re.findall(rb"(\d+\.\d+)/60\.00 sim s", bar)
    return max((float(s) for s in shown), default=0.0)


def test_sigterm_stops_the_run_and_still_writes_outputs(tmp_path):
    """A real process: SIGTERM once the loop is ticking (its progress bar, drawn on a pseudo
    terminal, shows simulated time going by) ends the run and the outputs are written."""
    out = tmp_path / "run"
    master, slave = pty.openpty()
    # tqdm draws nothing on a terminal of width 0, a new pty's size: give it 24 x 120.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
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
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    bar = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed its end
                return
            if not chunk:
                return
            bar.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: _sim_seconds_shown(bytes(bar)) > 0 or proc.poll() is not None,
            timeout=60,
            what="the sim's progress bar to show simulated time",
        )
        assert proc.poll() is None, bar.decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        os.close(master)
    assert proc.returncode == 0, bar.decode(errors="replace")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["sim_steps"] < 60000
    assert "INTERRUPTED" in stdout


@pytest.mark.slow
def test_bench_mpc_prints_table_and_json(tmp_path):
    """The `vmpc bench` entry point, for real."""
    proc = vmpc_subprocess(
        "bench", "mpc", "--horizons", "5", "10", "--replans", "30", "--out", tmp_path, "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio" in proc.stdout and "raw p50" in proc.stdout
    data = json.loads((tmp_path / "bench_mpc.json").read_text())
    assert [r["horizon"] for r in data["rows"]] == [5, 10]
    for r in data["rows"]:
        for key in ("ours_ms_p50", "ours_ms_p99", "raw_ms_p50", "raw_ms_p99", "real_time_factor"):
            assert np.isfinite(r[key]) and r[key] > 0, key
        assert r["ours_ms_p50"] <= r["ours_ms_p99"] and r["raw_ms_p50"] <= r["raw_ms_p99"]
        # The table prints the figures of the JSON.
        assert f"{r['ratio_p50']:.2f}x" in proc.stdout and f"{r['ratio_p99']:.2f}x" in proc.stdout
    assert data["worst_ratio_p50"] == max(r["ratio_p50"] for r in data["rows"])
