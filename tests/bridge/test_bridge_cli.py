"""The bridge end to end from the command line: `vmpc sim --bridge` in a subprocess, every
client verb against it, a push whose recovery lands in summary.json, and a clean SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np

from mpc.bridge.client import BridgeClient

from .conftest import IIWA, ROOT, free_ports, wait_state, wait_until

TOL = 0.005  # [m] task.tolerance_m of iiwa_reach.yaml: "reached" and "recovered"


def ee_error(s: dict) -> float:
    return float(np.linalg.norm(np.subtract(s["ee"], s["target"])))


def test_verbs_fail_cleanly_without_a_server(vmpc_main):
    port = free_ports(1)[0]
    t0 = time.monotonic()
    proc = vmpc_main("status", "--address", f"127.0.0.1:{port}", "--timeout", "0.3")
    assert proc.returncode == 2 and time.monotonic() - t0 < 5
    assert f"no reply from tcp://127.0.0.1:{port} within 0.3 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    for args, words in [
        (
            ["perturb", "--force", "1", "0", "0", "--duration", "-1"],
            "--duration must be a positive",
        ),
        (["swap"], "either a PATH"),
        (["watch", "--client-key", "x.key_secret"], "both --client-key and --server-key"),
        (["target", "0", "0", "0", "--client-key", "a", "--server-key", "b"], "no such key file"),
        (["stream-wrench", "--direction", "0", "0", "0"], "--direction must not be zero"),
        (["perturb", "--force", "1", "0", "0", "--duration", "1"], "no reply from"),
        (["watch"], "no reply from"),
        (["stream-wrench", "--duration", "0.1"], "no reply from"),
    ]:
        proc = vmpc_main(*args, "--address", f"127.0.0.1:{port}", "--timeout", "0.3")
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_sim_with_bridge_and_every_verb(tmp_path, vmpc_main):
    state, command, wrench = free_ports(3)
    out = tmp_path / "run"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmpc",
            "sim",
            "--config",
            str(IIWA),
            "--bridge",
            "--duration",
            "60",
            "--out",
            str(out),
            "--no-plots",
            "-q",
            "--set",
            "disturbances.schedule=[]",
            "--set",
            f"bridge.state_port={state}",
            "--set",
            f"bridge.command_port={command}",
            "--set",
            f"bridge.wrench_port={wrench}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The real client entry point, once: started with the sim, it waits for the server to
    # answer (its command is queued until the port is up), so it doubles as the start-up wait.
    status = subprocess.Popen(
        [sys.executable, "-m", "vmpc", "status", "--address", f"127.0.0.1:{command}"]
        + ["--timeout", "90"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = ["--address", f"127.0.0.1:{command}", "--timeout", "10"]
    probe = BridgeClient(f"127.0.0.1:{command}", timeout_s=10)  # the test's own eyes on the run
    try:
        wait_until(
            lambda: sim.poll() is not None or status.poll() is not None,
            timeout=90,
            interval=0.05,
            what="the sim answers `vmpc status`",
        )
        assert sim.poll() is None, sim.communicate()[1]
        status_out, status_err = status.communicate()
        assert status.returncode == 0, status_err
        assert "wallclock" in status_out  # --bridge implies wallclock timing
        assert f"tcp://127.0.0.1:{state}" in status_out
        watch = vmpc_main("watch", "--count", "3", "--rate", "20", *address)
        assert watch.returncode == 0, watch.stderr
        assert watch.stdout.count(" msg/s ") == 3 and "err" in watch.stdout
        target = vmpc_main("target", "0.45", "0.35", "0.6", *address)
        assert target.returncode == 0 and "target [+0.450, +0.350, +0.600]" in target.stdout
        refused = vmpc_main("target", "0.4", "0.4", "3", *address)
        assert refused.returncode == 2 and "outside the workspace" in refused.stderr
        swap = vmpc_main("swap", "none", *address)
        assert swap.returncode == 0 and "terminal is now none" in swap.stdout, swap.stderr
        swap = vmpc_main("swap", "--clear", *address)
        assert swap.returncode == 0 and "terminal is now quadratic" in swap.stdout, swap.stderr
        swap = vmpc_main("swap", "/etc/hosts", *address)
        assert swap.returncode == 2 and "allowed_dirs" in swap.stderr
        stream = vmpc_main(
            "stream-wrench",
            "--profile",
            "sine",
            "--amplitude",
            "5",
            "--duration",
            "0.3",
            *address,
        )
        assert stream.returncode == 0 and "streamed" in stream.stdout, stream.stderr
        # The target reached and the stream gone (stale) before the push.
        wait_state(
            probe,
            lambda s: s["stream"] is None and not s["disturbances"] and ee_error(s) < TOL,
            timeout=15,
        )
        push = vmpc_main("perturb", "--force", "40", "0", "0", "--duration", "0.1", *address)
        assert push.returncode == 0 and "push [+40.000" in push.stdout, push.stderr
        t_push = float(re.search(r"from t = ([0-9.]+) s", push.stdout).group(1))
        # The recovery takes ~0.7 s of (wallclock) sim time: back within tolerance well after.
        wait_state(probe, lambda s: s["t"] > t_push + 1.0 and ee_error(s) < TOL, timeout=15)
        # ... and a state stream that has been flowing for more than 2000 ticks.
        wait_until(lambda: probe.status()["counters"]["published"] > 1000, timeout=30)
    finally:
        probe.close()
        if status.poll() is None:
            status.kill()
            status.communicate()
        sim.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = sim.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()
            stdout, stderr = sim.communicate()
    assert sim.returncode == 0, stderr
    assert "INTERRUPTED" in stdout and "bridge" in stdout
    assert f"bridge: state tcp://127.0.0.1:{state}" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["timing"] == "wallclock"
    b = summary["bridge"]
    assert b["bad"] == 0 and b["refused"] == 2 and b["applied"] >= 6
    assert b["wrench_applied"] > 0 and b["wrench_stale"] >= 1 and b["published"] > 1000
    (rec,) = summary["recoveries"]
    assert rec["peak_deviation_m"] > 0.02
    assert rec["recovery_time_s"] is not None and rec["recovery_time_s"] < 2.0
    assert (out / "log.npz").is_file()
