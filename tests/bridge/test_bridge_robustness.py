"""Hostile traffic while a sim runs: thousands of malformed frames, a flood above the rate limit,
a subscriber that stops reading, clients that vanish mid-exchange. Pass criteria: the loop never
crashes, nothing invalid is ever applied (checked at every tick), memory stays bounded, and the
deadline-miss rate is no worse than in a quiet window of the same run."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from mpc.bridge.client import BridgeClient
from mpc.bridge.messages import encode

from .conftest import run_bridge, wait_until

# Rates of deadline misses are compared between windows of one run: no neighbouring test.
pytestmark = pytest.mark.serial

VALID_FORCE = 7.0  # [N] the only push magnitude a flooder sends in a valid command

# The flooder runs in its own process (only zmq and msgpack: it starts in ~0.1 s) so its work
# never competes with the loop for the GIL. It prints one JSON line of what came back.
FLOODER = r"""
import json, math, random, sys, time
import msgpack, zmq

cmd_ep, wrench_ep = sys.argv[1:3]
rnd = random.Random(7)
pack = lambda o: msgpack.packb(o, use_bin_type=True)
ctx = zmq.Context()
if cmd_ep == "dry":  # the same work against a stand-in server in this process: the baseline
    import threading
    sink = ctx.socket(zmq.ROUTER); sink.linger = 0
    cmd_ep = "tcp://127.0.0.1:%d" % sink.bind_to_random_port("tcp://127.0.0.1")
    wrench_ep = "tcp://127.0.0.1:%d" % ctx.socket(zmq.SUB).bind_to_random_port("tcp://127.0.0.1")
    def serve():
        while True:
            frames = sink.recv_multipart()
            ok = len(frames) == 2 and frames[1] == valid
            sink.send_multipart([frames[0], pack({"id": None, "ok": ok, "cmd": "push",
                                                  "error": "x"})])
    threading.Thread(target=serve, daemon=True).start()
d = ctx.socket(zmq.DEALER); d.linger = 0; d.sndhwm = d.rcvhwm = 0; d.connect(cmd_ep)
w = ctx.socket(zmq.PUB); w.linger = 0; w.connect(wrench_ep)
valid = pack({"version": 1, "cmd": "push", "force": [7.0, 0, 0], "duration": 0.01})
frames = []
for i in range(900):
    frames.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 200))))
for i in range(500):
    frames.append(valid[:rnd.randrange(0, len(valid))])
for i in range(400):
    frames.append(pack({"version": 1, "cmd": "push", "force": ["7", 0, 0], "duration": "x"}))
for i in range(300):
    frames.append(pack({"version": 1, "cmd": "set_target", "target": [0.1] * 2000}))
for i in range(400):
    frames.append(pack({"version": 1, "cmd": "set_target", "target": [math.nan, 0.0, 0.5]}))
for i in range(300):
    frames.append(pack({"version": 1, "cmd": "push", "force": [1e6, 0, 0], "duration": 0.1}))
for i in range(300):
    frames.append(pack({"version": 1, "cmd": rnd.choice(["rm", "exec", "", "PUSH"])}))
for i in range(200):
    frames.append(pack({"version": 1, "cmd": "set_target", "target": [5.0, 0.0, 0.5]}))
rnd.shuffle(frames)
n_valid = 20
for i in range(n_valid):
    frames.insert(rnd.randrange(len(frames)), valid)
t0 = time.monotonic()
for i, f in enumerate(frames):
    if i % 50 == 0:  # a few multi-frame messages too
        d.send_multipart([valid, valid, b"x"])
    d.send(f)
    if i % 10 == 0:  # and garbage on the wrench stream
        w.send(bytes(rnd.getrandbits(8) for _ in range(40)), zmq.NOBLOCK)
        w.send(pack({"version": 1, "t": time.time(), "force": [1e9, 0, 0]}), zmq.NOBLOCK)
        w.send(pack({"version": 1, "t": time.time(), "force": [math.inf, 0, 0]}), zmq.NOBLOCK)
multi = len(frames) // 50 + (1 if len(frames) % 50 else 0)
expected = len(frames) + multi
# Rate flood: valid commands as fast as possible, far above the configured rate.
for i in range(600):
    d.send(pack({"version": 1, "id": 100000 + i, "cmd": "status"}))
expected += 600
ok = err = rate = 0
pushed = 0
deadline = time.monotonic() + 30
got = 0
while got < expected and time.monotonic() < deadline:
    if not d.poll(1000):
        continue
    r = msgpack.unpackb(d.recv(), raw=False)
    got += 1
    if r["ok"]:
        ok += 1
        pushed += r["cmd"] == "push"
    else:
        err += 1
        rate += "commands/s" in r["error"]
print(json.dumps({"sent": expected, "replies": got, "ok": ok, "errors": err, "rate_limited": rate,
                  "pushes_ok": pushed, "valid_pushes": n_valid,
                  "seconds": time.monotonic() - t0}))
"""


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


class Watchdog:
    """A tick hook that checks, at every tick, that nothing invalid is applied, and records
    each tick's solve time and wall-clock gap for the miss rates."""

    def __init__(self, loop) -> None:
        ws = loop.cfg.task.workspace
        self.lo, self.hi = np.asarray(ws.min), np.asarray(ws.max)
        self.lim = loop.cfg.bridge.limits
        self.t, self.solve_ms, self.gap_ms = [], [], []
        self.violations: list[str] = []
        self._last = None

    def __call__(self, loop, k, t) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gap_ms.append((now - self._last) * 1e3)
            self.t.append(t)
            self.solve_ms.append(loop.controller.last_report.solve_ms)
        self._last = now
        target = loop.target
        if not (
            np.all(np.isfinite(target)) and np.all(target >= self.lo) and np.all(target <= self.hi)
        ):
            self.violations.append(f"t={t}: target {target}")
        for p in loop.disturbances.active:
            if p.source == "bridge" and not math.isclose(np.linalg.norm(p.force), VALID_FORCE):
                self.violations.append(f"t={t}: push {p.force}")
        s = loop.disturbances.stream
        if s is not None and not (
            np.all(np.isfinite(s[1])) and np.linalg.norm(s[1]) <= self.lim.max_force_n
        ):
            self.violations.append(f"t={t}: stream {s[1]}")

    def rates(self, t0: float, t1: float) -> tuple[float, float]:
        """(deadline-miss rate, rate of ticks more than 2 ms late) in sim window [t0, t1)."""
        t = np.asarray(self.t)
        sel = (t >= t0) & (t < t1)
        return (
            float(np.mean(np.asarray(self.solve_ms)[sel] > 1.0)),
            float(np.mean(np.asarray(self.gap_ms)[sel] > 2.0)),
        )


def test_malformed_frames_and_a_rate_flood_change_nothing_they_should_not():
    with run_bridge(
        ["bridge.messages_per_tick=4", "bridge.command_rate_hz=200", "bridge.command_burst=50"]
    ) as rb:
        dog = Watchdog(rb.loop)
        rb.loop.tick_hooks.insert(0, dog)
        hook_t: list[float] = []  # [s] sim time of each call of the bridge's hook
        hook_cpu_us: list[float] = []  # the bridge's own work, in CPU time: preemption by
        serve = rb.loop.tick_hooks[-1]  # other processes on a busy machine does not count

        def timed(loop, k, t):
            t0 = time.thread_time()
            serve(loop, k, t)
            hook_cpu_us.append((time.thread_time() - t0) * 1e6)
            hook_t.append(t)

        rb.loop.tick_hooks[-1] = timed
        c = rb.client
        busy = os.getloadavg()[0]  # [runnable tasks] others' load makes timings meaningless
        t_quiet = c.status()["sim_time"]
        # A deliberately quiet window (no traffic at all: the baseline the flood is compared
        # with), then one with the same traffic aimed elsewhere.
        time.sleep(1.0)
        t_dry = c.status()["sim_time"]
        dry = subprocess.run(
            [sys.executable, "-c", FLOODER, "dry", ""], capture_output=True, text=True, timeout=60
        )
        assert dry.returncode == 0, dry.stderr
        rss0 = rss_mb()
        t_flood = c.status()["sim_time"]
        flood = subprocess.run(
            [
                sys.executable,
                "-c",
                FLOODER,
                rb.server.endpoints["commands"],
                rb.server.endpoints["wrench"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert flood.returncode == 0, flood.stderr
        t_end = c.status()["sim_time"]
        dry = subprocess.run(
            [sys.executable, "-c", FLOODER, "dry", ""], capture_output=True, text=True, timeout=60
        )
        assert dry.returncode == 0, dry.stderr
        t_dry2 = c.status()["sim_time"]
        busy = max(busy, os.getloadavg()[0])
        # A peer sending a frame far above the size limit is cut off by libzmq itself, unread.
        received = rb.server.counters.received
        ctx = zmq.Context()
        try:
            big = ctx.socket(zmq.DEALER)
            big.linger = 0
            events = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            big.connect(rb.server.endpoints["commands"])
            for _ in range(20):
                big.send(b"\x00" * 1_000_000)
            assert events.poll(5000), "the server did not cut the oversized sender off"
            assert recv_monitor_message(events)["event"] == zmq.EVENT_DISCONNECTED
        finally:
            ctx.destroy(linger=0)
        assert rb.server.counters.received == received  # not a single frame of it was read
        assert c.status()["ok"]  # still answering
        rss1 = rss_mb()
        result = rb.stop()
    report = json.loads(flood.stdout)
    counters = rb.server.counters
    assert dog.violations == []
    assert report["replies"] == report["sent"], report  # every frame got exactly one reply
    assert report["pushes_ok"] <= report["valid_pushes"]
    bridge_pushes = [p for p in rb.loop.disturbances.history if p.source == "bridge"]
    assert len(bridge_pushes) == report["pushes_ok"]
    assert all(np.linalg.norm(p.force) == VALID_FORCE for p in bridge_pushes)
    assert counters.bad >= 2600 and counters.refused >= 500  # the 1e6 N pushes, targets, rate
    assert report["rate_limited"] > 0 and counters.rate_limited == report["rate_limited"]
    # The rate flood: at most a burst plus the sustained rate over its duration got through.
    assert report["ok"] - report["pushes_ok"] <= 50 + 200 * report["seconds"] + 20
    assert counters.wrench_applied == 0 and counters.wrench_bad + counters.wrench_refused > 0
    assert rss1 - rss0 < 64, f"RSS grew by {rss1 - rss0:.0f} MB"
    # Deadline misses (and ticks more than 2 ms late) while the bridge is flooded are no more
    # frequent than with no traffic, or with the same sender loading the machine but aiming at
    # a stand-in: on 2 cores the sender's own CPU use is not the bridge's doing.
    windows = [dog.rates(t_quiet + 0.2, t_dry), dog.rates(t_dry, t_flood), dog.rates(t_end, t_dry2)]
    flooded = dog.rates(t_flood, t_end)
    slack = 0.03
    if busy > (os.cpu_count() or 1):  # others load the machine: windows differ by their noise
        slack = 0.15
        warnings.warn(
            f"machine busy (load {busy:.1f}): rates compared with slack {slack}: "
            f"flooded {flooded}, without bridge traffic {windows}",
            stacklevel=1,
        )
    for i, what in enumerate(["deadline-miss rate", "late-tick rate"]):
        worst = max(w[i] for w in windows)
        assert flooded[i] <= worst + slack, (what, windows, flooded)
    assert result.summary.fallback_ticks == 0 and result.summary.nonfinite_torques == 0
    hook_t_arr = np.asarray(hook_t)
    in_flood = (hook_t_arr >= t_flood) & (hook_t_arr < t_end)  # the hook calls under the flood
    assert in_flood.sum() > 100
    # Bounded work, well under a tick.
    assert np.percentile(np.asarray(hook_cpu_us)[in_flood], 99) < 1000


def test_stalled_subscriber_and_vanishing_clients():
    with run_bridge() as rb:
        ep = rb.server.endpoints
        ctx = zmq.Context()
        stalled = ctx.socket(zmq.SUB)  # subscribes, then never reads a single message
        stalled.linger = 0
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(ep["state"])
        rss0 = rss_mb()
        st0 = rb.client.status()  # counters and tick read in the same tick
        # Clients that vanish mid-exchange: commands sent, socket gone before the replies.
        for i in range(20):
            gone = ctx.socket(zmq.DEALER)
            gone.connect(ep["commands"])
            n = rb.server.counters.received
            gone.send(encode({"version": 1, "id": i, "cmd": "status"}))
            gone.send(encode({"version": 1, "id": i, "cmd": "swap_value", "path": "none"}))
            # Gone as soon as the server has read both (the swap's reply comes later).
            wait_until(lambda n=n: rb.server.counters.received >= n + 2, what="commands read")
            gone.close(linger=0)
        # ... and peers that drop the TCP connection halfway through the ZMTP handshake.
        port = int(ep["commands"].rsplit(":", 1)[1])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                raw.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03")
        # The stalled reader stays subscribed, unread, over many publishes (>= 1000 ticks).
        published0 = st0["counters"]["published"]
        wait_until(
            lambda: rb.server.counters.published - published0 >= 500,
            timeout=30,
            what="500 states published past the stalled reader",
        )
        # A reader that only wants the newest state gets a fresh one, however slow it is.
        with BridgeClient(ep["commands"], timeout_s=5) as c:
            states = c.states(latest=True)
            next(states)
            time.sleep(0.5)  # fall behind on purpose
            s = next(states)
            assert time.time() - s["wall_time"] < 0.05
            states.close()
            st = c.status()
        published = st["counters"]["published"] - st0["counters"]["published"]
        ticks = st["sim_tick"] - st0["sim_tick"]
        assert ticks > 500
        # Publishing never blocked or skipped for the stalled reader: every 2nd tick, give or
        # take the first and the last.
        assert abs(published - ticks / 2) <= 1 and rb.server.counters.publish_dropped == 0
        assert rss_mb() - rss0 < 64
        assert st["terminal"] == "none"  # the vanished clients' swaps still went through
        result = rb.stop()  # re-raises anything the loop raised
        stalled.close()
        ctx.term()
    assert result.summary.fallback_ticks == 0 and result.summary.nonfinite_torques == 0


def test_zmtp1_peer_causes_no_internal_error():
    """Found by ``vmpc bench soak``'s fuzzer: a peer that speaks ZMTP/1.0 (raw TCP bytes whose
    first byte is not 0xff are taken for one) gets frames to the ROUTER and to the wrench SUB
    that carry no source fd; reading it raised ZMQError in the tick hook, dropping the rest of
    that tick's commands. Such frames are now simply not charged to a connection."""
    with run_bridge() as rb:
        rb.client.status()
        for port in ("commands", "wrench"):
            host, p = rb.server.endpoints[port].rsplit("/", 1)[1].rsplit(":", 1)
            with socket.create_connection((host, int(p)), timeout=2.0) as s:
                # ZMTP/1.0 framing: length (flags included), flags, body. An empty identity,
                # then one 5-byte message.
                s.sendall(b"\x01\x00" + b"\x06\x00hello")
                time.sleep(0.3)
        assert rb.client.status()["counters"]["internal_errors"] == 0
