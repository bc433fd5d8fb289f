"""The bridge end to end from the command line: `vmpc sim --bridge` in a subprocess, every
client verb against it, a push whose recovery lands in summary.json, and a clean SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

from .conftest import IIWA, ROOT


def vmpc(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "vmpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_main(capsys, *args):
    """A verb in-process (a subprocess per verb would mostly time Python's start-up)."""
    from vmpc.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def test_verbs_fail_cleanly_without_a_server(capsys):
    port = free_ports(1)[0]
    t0 = time.monotonic()
    proc = vmpc("status", "--address", f"127.0.0.1:{port}", "--timeout", "0.3")
    assert proc.returncode == 2 and time.monotonic() - t0 < 20
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
        proc = run_main(capsys, *args, "--address", f"127.0.0.1:{port}", "--timeout", "0.3")
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_sim_with_bridge_and_every_verb(tmp_path, capsys):
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
    address = ["--address", f"127.0.0.1:{command}", "--timeout", "10"]
    try:
        status = vmpc("status", *address)  # the real entry point, once
        assert status.returncode == 0, status.stderr + (sim.stderr.read() if sim.poll() else "")
        assert "wallclock" in status.stdout  # --bridge implies wallclock timing
        assert f"tcp://127.0.0.1:{state}" in status.stdout
        watch = run_main(capsys, "watch", "--count", "3", "--rate", "20", *address)
        assert watch.returncode == 0, watch.stderr
        assert watch.stdout.count(" msg/s ") == 3 and "err" in watch.stdout
        target = run_main(capsys, "target", "0.45", "0.35", "0.6", *address)
        assert target.returncode == 0 and "target [+0.450, +0.350, +0.600]" in target.stdout
        refused = run_main(capsys, "target", "0.4", "0.4", "3", *address)
        assert refused.returncode == 2 and "outside the workspace" in refused.stderr
        swap = run_main(capsys, "swap", "none", *address)
        assert swap.returncode == 0 and "terminal is now none" in swap.stdout, swap.stderr
        swap = run_main(capsys, "swap", "--clear", *address)
        assert swap.returncode == 0 and "terminal is now quadratic" in swap.stdout, swap.stderr
        swap = run_main(capsys, "swap", "/etc/hosts", *address)
        assert swap.returncode == 2 and "allowed_dirs" in swap.stderr
        stream = run_main(
            capsys,
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
        time.sleep(1.5)  # let the target and the stream settle before the push
        push = run_main(capsys, "perturb", "--force", "40", "0", "0", "--duration", "0.1", *address)
        assert push.returncode == 0 and "push [+40.000" in push.stdout, push.stderr
        time.sleep(2.0)  # the recovery takes ~0.7 s of (wallclock) sim time
    finally:
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
