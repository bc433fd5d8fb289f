"""The bridge on a running closed loop (in-process, loop in a thread, loopback, random ports):
a round trip for every command, and each command's effect on the loop."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mpc.bridge.client import BridgeClient, BridgeTimeout, CommandRefused
from mpc.bridge.server import BridgeError, BridgeServer
from mpc.config import load_config
from mpc.loop import ClosedLoop

from .conftest import IIWA, ROOT, free_ports, make_artifact, run_bridge, wait_state, wait_until


def test_round_trip_of_every_command():
    with run_bridge() as rb:
        c = rb.client
        st = c.status()
        assert st["schema"] == 1 and st["timing"] == "wallclock" and st["terminal"] == "quadratic"
        assert st["endpoints"] == rb.server.endpoints and "lbr_iiwa_link_7" in st["links"]
        r = c.push([20.0, 0, 0], duration=0.05)
        assert r["ok"] and r["link"] == "lbr_iiwa_link_7"
        assert r["end"] == pytest.approx(r["t"] + 0.05)
        r = c.push([0, 0, 5.0], torque=[0, 1.0, 0], duration=0.05, link="lbr_iiwa_link_4")
        assert r["link"] == "lbr_iiwa_link_4"
        assert c.set_target([0.4, 0.4, 0.55])["target"] == [0.4, 0.4, 0.55]
        r = c.swap_value("none")
        assert r["terminal"] == "none" and r["applied_t"] >= 0
        assert c.clear_value()["terminal"] == "quadratic"
        assert c.pause()["paused"] is True
        assert c.resume()["paused"] is False
        refusals = {
            "|force|": lambda: c.push([500.0, 0, 0], duration=0.1),
            "|torque|": lambda: c.push([0, 0, 0], torque=[0, 0, 80.0], duration=0.1),
            "duration": lambda: c.push([1.0, 0, 0], duration=10.0),
            "unknown link": lambda: c.push([1.0, 0, 0], duration=0.1, link="gripper"),
            "outside the workspace": lambda: c.set_target([0.4, 0.4, 2.0]),
            "unreachable": lambda: c.set_target([-0.9, -0.9, 1.2]),
            "allowed_dirs": lambda: c.swap_value("/etc/passwd"),
            "not 'none'": lambda: c.swap_value("../../models/x.pt"),
            "unknown command": lambda: c.request("reboot"),
            "unknown field": lambda: c.request("status", verbose=True),
        }
        for words, call in refusals.items():
            with pytest.raises(CommandRefused, match=words) as exc:
                call()
            assert "\n" not in exc.value.reason
        counters = c.status()["counters"]
        assert counters["bad"] == 2 and counters["refused"] == 8
        # status, 2 pushes, target, swap, clear, pause, resume (this status counts once answered)
        assert counters["applied"] == 8
        result = rb.stop()
    assert [e["spec"] for e in result.summary.swaps] == ["none", "quadratic"]
    bridge_pushes = [p for p in rb.loop.disturbances.history if p.source == "bridge"]
    assert len(bridge_pushes) == 2


def test_push_moves_the_ee_and_the_recovery_is_in_the_summary():
    with run_bridge() as rb:
        c = rb.client
        wait_state(
            c, lambda s: np.linalg.norm(np.subtract(s["ee"], s["target"])) < 0.005 and s["t"] > 0.5
        )
        r = c.push([50.0, 0, 0], duration=0.1)
        seen = wait_state(
            c, lambda s: s["disturbances"] and s["disturbances"][0]["source"] == "bridge"
        )
        assert seen["disturbances"][0]["force"] == [50.0, 0.0, 0.0]
        moved = wait_state(c, lambda s: np.linalg.norm(np.subtract(s["ee"], s["target"])) > 0.02)
        assert moved["t"] < r["t"] + 0.5
        wait_state(c, lambda s: s["t"] > r["t"] + 1.5, timeout=10)
        result = rb.stop()
    rec = result.summary.recoveries
    assert len(rec) == 1 and rec[0].start_s == pytest.approx(r["t"])
    assert rec[0].peak_deviation_m > 0.02 and rec[0].recovery_time_s is not None


def test_target_change_is_tracked():
    with run_bridge() as rb:
        c = rb.client
        new = [0.5, 0.2, 0.5]
        r = c.set_target(new)
        s = wait_state(c, lambda s: np.linalg.norm(np.subtract(s["ee"], new)) < 0.005, timeout=10)
        assert s["target"] == new and s["t"] - r["t"] < 3.0
        assert np.allclose(rb.loop.target, new)


def test_wrench_stream_is_applied_and_goes_back_to_zero_when_it_stops():
    with run_bridge(["bridge.stale_after_s=0.05"]) as rb:
        c = rb.client
        counters = rb.server.counters
        states = c.states()
        next(states)  # subscribed before the stream starts
        deadline = time.monotonic() + 5.0
        seen = None
        # A stream at ~500 samples/s (the sleep is its sample period) until the loop has applied
        # more than 10 samples and a state shows the streamed force.
        while seen is None or counters.wrench_applied <= 10:
            assert time.monotonic() < deadline, "the stream was not applied in time"
            c.send_wrench([15.0, 0, 0], t=time.time())
            time.sleep(0.002)
            s = next(states)
            if s["stream"] is not None:
                seen = s
        states.close()
        assert seen["stream"]["force"] == [15.0, 0.0, 0.0]
        wait_state(c, lambda s: s["stream"] is None, timeout=2.0)  # stale: zero, not frozen
        n = c.status()["counters"]
        # At least the one staleness at the end; a machine hiccup longer than stale_after_s
        # (50 ms) mid-stream legitimately counts another (seen once in a loaded full suite).
        assert n["wrench_applied"] > 10 and n["wrench_stale"] >= 1
        # Samples above the limits or on unknown links are not applied.
        applied = n["wrench_applied"]
        for _ in range(50):
            c.send_wrench([500.0, 0, 0])
            c.send_wrench([5.0, 0, 0], link="nowhere")
            time.sleep(0.002)  # sample period, as above
        # A malformed last sample marks the end: once it is counted, every earlier sample has
        # been read (and refused) or dropped by the conflating sockets, never to be applied.
        bad = counters.wrench_bad
        c.send_wrench([float("nan"), 0, 0])
        wait_until(lambda: counters.wrench_bad > bad, what="the end marker was read")
        assert rb.loop.disturbances.stream is None
        n = c.status()["counters"]
        assert n["wrench_refused"] > 0 and n["wrench_applied"] == applied


def test_pause_and_resume_freeze_sim_time_in_wallclock():
    with run_bridge() as rb:
        c = rb.client
        c.pause()
        t1 = c.status()["sim_time"]
        time.sleep(0.3)  # a deliberately long paused window: sim time must not move in it
        st = c.status()
        assert st["paused"] and st["sim_time"] == t1
        assert next(c.states())["paused"] is True  # the stream keeps flowing while paused
        c.resume()
        wait_until(lambda: c.status()["sim_time"] > t1 + 0.05, what="sim time moves on")


def test_lockstep_applies_commands_at_the_tick_they_are_read():
    with run_bridge(timing="lockstep") as rb:
        c = rb.client
        with pytest.raises(CommandRefused, match="wallclock"):
            c.pause()
        r = c.push([10.0, 0, 0], duration=0.02)
        rb.stop()
    dt = rb.loop.arm.dt
    assert r["t"] == pytest.approx(r["tick"] * dt)
    (p,) = [p for p in rb.loop.disturbances.history if p.source == "bridge"]
    assert p.start == r["t"]  # started at the very tick the command was read


def test_no_server_and_busy_port_fail_with_one_line():
    nobody = free_ports(1)[0]  # a port nobody listens on
    c = BridgeClient(f"tcp://127.0.0.1:{nobody}", timeout_s=0.2)
    with pytest.raises(BridgeTimeout, match=f"no reply from tcp://127.0.0.1:{nobody} within 0.2 s"):
        c.status()
    with pytest.raises(BridgeTimeout):
        c.status()  # the DEALER is still usable after a lost reply (a REQ would be wedged)
    c.close()
    with run_bridge() as rb:
        port = rb.server.endpoints["commands"].rsplit(":", 1)[1]
        cfg = load_config(
            IIWA,
            [
                "run.duration=0.1",
                f"bridge.command_port={port}",
                "bridge.state_port=0",
                "bridge.wrench_port=0",
            ],
        )
        with ClosedLoop(cfg) as loop:
            with pytest.raises(BridgeError, match=f"cannot listen on tcp://127.0.0.1:{port}"):
                BridgeServer(loop)
        assert rb.client.status()["ok"]  # the running bridge is unaffected


def test_model_swaps_through_the_bridge(tmp_path, monkeypatch):
    """A valid model goes live; a wrong-dimension one is refused while the old one keeps
    running."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    cfg = load_config(IIWA)
    make_artifact(tmp_path / "models/good.pt", cfg)
    make_artifact(tmp_path / "models/wrong_dim.pt", cfg, nx=12)
    # The latency budget of a value is not under test here: timed on a loaded machine, it
    # would refuse at random.
    models = tmp_path / "models"
    with run_bridge(["value.max_call_us=50000", f"value.allowed_dirs=[{models}]"]) as rb:
        c = rb.client
        r = c.swap_value("models/good.pt")
        assert r["terminal"] != "quadratic" and r["model_id"].startswith("good.pt@")
        live = r["terminal"]
        with pytest.raises(CommandRefused, match="state dimension 12 != this robot's 14"):
            c.swap_value("models/wrong_dim.pt")
        assert c.status()["terminal"] == live
        s = wait_state(c, lambda s: s["t"] > 0.3)
        assert s["terminal"] == live and s["solve_status"] == "OK"
        result = rb.stop()
    assert result.summary.fallback_ticks == 0 and result.summary.solver_failures == 0


def test_a_shipped_model_swaps_in_with_the_shipped_config(monkeypatch):
    """As a user would: the shipped config (value.allowed_dirs: [../models], relative to it)
    and a path relative to the repository; the bridge resolves it as the loader does."""
    monkeypatch.chdir(ROOT)
    with run_bridge() as rb:
        r = rb.client.swap_value("models/iiwa_dvp.pt")
        assert r["model_id"].startswith("iiwa_dvp.pt@"), r
        with pytest.raises(CommandRefused, match=r"inside value.allowed_dirs \(\.\./models"):
            rb.client.swap_value("/etc/passwd")
