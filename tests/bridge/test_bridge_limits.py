"""Limits in total, with real sockets on loopback: a multi-frame flood from another process
cannot fill the server's memory, rotating identities cannot get past the global rate limit,
pushes cannot stack past the count and total-wrench caps, a flood of identities keeps the
per-client table bounded, a non-loopback bind needs CURVE or an explicit ``insecure: true``,
and secret keys are 0600 from their first byte."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from mpc.bridge import keys as keys_mod
from mpc.bridge.client import CommandRefused
from mpc.bridge.server import BridgeError, BridgeServer, _is_loopback
from mpc.config import load_config
from mpc.loop import ClosedLoop

from .conftest import IIWA, PORTS, run_bridge, wait_until

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


# 100 MB in multi-frame messages of 25 KB frames (each below MAXMSGSIZE), from ``n``
# connections at once (4000 / n frames each), from its own process so that the flood runs at full
# speed whatever the loop does.
MULTIPART_FLOODER = r"""
import sys, time, zmq
endpoint, hold, n, kind = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = zmq.Context()
socks = []
for i in range(n):
    d = ctx.socket(getattr(zmq, kind)); d.linger = 0; d.sndhwm = 0
    d.connect(endpoint)
    socks.append(d)
time.sleep(0.3)
chunk = b"x" * 25000
t0 = time.monotonic()
for i in range(4000 // n):
    for d in socks:
        d.send(chunk, zmq.SNDMORE)
for d in socks:
    d.send(b"end")
print("queued %.2f s" % (time.monotonic() - t0), flush=True)
time.sleep(hold)
"""


def flood_growth(endpoint: str, connections: int, kind: str = "DEALER") -> tuple[float, str]:
    """Peak RSS growth of this process [MB] while a 100 MB multi-frame flood arrives."""
    rss0 = peak = rss_mb()
    proc = subprocess.Popen(
        [sys.executable, "-c", MULTIPART_FLOODER, endpoint, "1.5", str(connections), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while proc.poll() is None:
            peak = max(peak, rss_mb())
            time.sleep(0.002)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return peak - rss0, out.strip()


def test_a_multipart_flood_on_the_wrench_stream_neither_crashes_nor_fills_memory():
    """A conflated SUB (the landed wrench socket) aborts the process in libzmq (fq.cpp:80) when
    it reads part of a multi-frame message; now the frames are dropped and the guard holds."""
    with run_bridge() as rb:
        rb.client.status()
        growth, out = flood_growth(rb.server.endpoints["wrench"], 1, "PUB")
        assert rb.server.counters.connections_closed >= 1
        assert rb.server.counters.wrench_applied == 0
        assert rb.client.status()["counters"]["internal_errors"] == 0  # alive and serving
        print(f"RSS growth, 100 MB multipart flood on the wrench stream: {growth:.1f} MB")
        assert growth <= 16, f"RSS grew by {growth:.1f} MB ({out})"


@pytest.mark.parametrize("connections", [1, 10])
def test_a_multipart_flood_is_dropped_without_filling_memory(connections):
    with run_bridge() as rb:
        rb.client.status()  # the loop runs and every lazy import is done
        growth, out = flood_growth(rb.server.endpoints["commands"], connections)
        c = rb.server.counters
        assert c.connections_closed >= 1
        assert c.received == 1 and c.bad == 0  # only our status: no frame of the flood was read
        assert rb.client.status()["counters"]["internal_errors"] == 0  # still serving
        print(f"RSS growth, 100 MB multipart flood on {connections} connection(s): {growth:.1f} MB")
        assert growth <= 16, f"RSS grew by {growth:.1f} MB ({out})"


def _rotate(endpoint: str, n: int, timeout_s: float = 10.0) -> tuple[int, list[str], float]:
    """``n`` status commands, each from a new DEALER (a new identity); (ok, errors, seconds)."""
    ctx = zmq.Context()
    socks = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            d = ctx.socket(zmq.DEALER)
            d.linger = 0
            d.connect(endpoint)
            d.send(msgpack.packb({"version": 1, "cmd": "status", "id": i}))
            socks.append(d)
        poller = zmq.Poller()
        for d in socks:
            poller.register(d, zmq.POLLIN)
        ok, errors, left = 0, [], set(socks)
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for d, _ in poller.poll(100):
                r = msgpack.unpackb(d.recv())
                poller.unregister(d)
                left.discard(d)
                if r["ok"]:
                    ok += 1
                else:
                    errors.append(r["error"])
        assert not left, f"{len(left)} of {n} commands got no reply"
        return ok, errors, time.monotonic() - t0
    finally:
        for d in socks:
            d.close(0)
        ctx.term()


def test_rotating_identities_stay_within_the_global_rate_and_a_bounded_table():
    sets = [
        "bridge.limits.global_rate_hz=20",
        "bridge.limits.global_burst=10",
        "bridge.limits.max_clients=16",
    ]
    with run_bridge(sets) as rb:
        n = 200
        ok, errors, seconds = _rotate(rb.server.endpoints["commands"], n)
        assert ok + len(errors) == n
        assert ok <= 10 + 20 * seconds + 1, (ok, seconds)  # burst + rate x time, nothing more
        assert all("all clients together" in e for e in errors)
        assert len(rb.server._buckets) <= 16  # 200 identities, a table of at most 16
        # the connections are gone and so is their bookkeeping (the client's own one remains)
        guard = rb.server._guard
        wait_until(lambda: len(guard.conns) <= 2, what="closed connections forgotten")
        time.sleep(10 / 20)  # the global bucket refills: one client gets through again
        assert rb.client.status()["limits"]["global_rate_hz"] == 20


def test_pushes_cannot_stack_past_the_count_and_total_caps():
    sets = ["bridge.limits.max_active_pushes=3", "bridge.limits.max_total_force_n=100"]
    with run_bridge(sets) as rb:
        c = rb.client
        c.push([40, 0, 0], duration=1.5)
        c.push([0, 40, 0], duration=1.5)
        with pytest.raises(CommandRefused, match="total bridge force would be 110 N"):
            c.push([0, 0, 30], duration=1.5)
        c.push([0, 0, 10], duration=1.5)
        with pytest.raises(CommandRefused, match="3 bridge pushes are active"):
            c.push([1, 0, 0], duration=1.5)
        active = [p for p in rb.loop.disturbances.active if p.source == "bridge"]
        assert len(active) <= 3
        assert sum(float((p.force**2).sum() ** 0.5) for p in active) <= 100 + 1e-9
        # a wrench sample that would take the total above the cap is not applied either
        wait_until(  # resent until the wrench stream is connected
            lambda: c.send_wrench([20, 0, 0]) or rb.server.counters.wrench_refused >= 1,
            what="sample refused",
        )
        assert rb.loop.disturbances.stream is None
        # once the pushes end, there is room again
        wait_until(
            lambda: not any(p.source == "bridge" for p in rb.loop.disturbances.active),
            timeout=5,
            what="the pushes ended",
        )
        c.push([90, 0, 0], duration=0.1)


@pytest.fixture
def plain_loop():
    cfg = load_config(IIWA, ["run.duration=1", "disturbances.schedule=[]", *PORTS])
    loop = ClosedLoop(cfg)
    yield cfg, loop
    loop.close()


def test_a_non_loopback_bind_needs_curve_or_insecure(plain_loop):
    cfg, loop = plain_loop
    spec = cfg.bridge.model_copy(update={"bind": "0.0.0.0"})
    with pytest.raises(BridgeError, match="bridge.insecure: true") as exc:
        BridgeServer(loop, spec)
    assert "\n" not in str(exc.value)
    insecure = spec.model_copy(update={"insecure": True})
    with BridgeServer(loop, insecure) as server:
        assert server.endpoints["commands"].startswith("tcp://0.0.0.0:")
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("127.0.0.2")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("*") and not _is_loopback("eth0")


def test_secret_key_is_0600_from_its_first_byte(tmp_path, monkeypatch):
    """Every byte of the secret goes into a file that is already 0600 (checked on each write,
    with a umask that would leave a default-created file world-readable), the file is created
    exclusively, and nothing chmods it after the fact."""
    writes: list[tuple[str, int]] = []
    opens: list[tuple[str, int, int]] = []
    real_open, real_write = os.open, os.write

    def spy_open(path, flags, mode=0o777, *a, **kw):
        opens.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    def spy_write(fd, data):
        writes.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_IMODE(os.fstat(fd).st_mode)))
        return real_write(fd, data)

    def forbidden(*a, **kw):
        raise AssertionError("no chmod after the fact and no zmq.auth.create_certificates")

    monkeypatch.setattr(keys_mod.os, "open", spy_open)
    monkeypatch.setattr(keys_mod.os, "write", spy_write)
    monkeypatch.setattr(keys_mod.os, "chmod", forbidden)
    monkeypatch.setattr(keys_mod.zmq.auth, "create_certificates", forbidden)
    old = os.umask(0o000)
    try:
        pub, sec = keys_mod.generate_keypair(tmp_path / "k", "alice")
    finally:
        os.umask(old)
    secret_opens = [o for o in opens if o[0].endswith(".key_secret")]
    assert len(secret_opens) == 1
    _, flags, mode = secret_opens[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    secret_writes = [w for w in writes if w[0].endswith(".key_secret")]
    assert secret_writes and all(m == 0o600 for _, m in secret_writes)
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert keys_mod.load_secret_key(sec)[0] == keys_mod.load_public_key(pub)
    # never overwrites, and never writes through a symlink planted at the secret's name
    (tmp_path / "k" / "bob.key_secret").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(keys_mod.KeyFileError, match="exists already"):
        keys_mod.generate_keypair(tmp_path / "k", "bob")
    assert not (tmp_path / "elsewhere").exists()


def test_a_key_race_leaves_no_half_pair(tmp_path, monkeypatch):
    """If the public file appears between the check and the write, the new secret is removed."""
    folder = tmp_path / "k"
    real = keys_mod._write_new

    def racing(path, data, mode):
        if path.suffix == ".key":
            path.write_text("someone else's\n")
        return real(path, data, mode)

    monkeypatch.setattr(keys_mod, "_write_new", racing)
    with pytest.raises(keys_mod.KeyFileError, match="exists already"):
        keys_mod.generate_keypair(folder, "carol")
    assert not (folder / "carol.key_secret").exists()


def test_connections_beyond_the_cap_are_closed():
    with run_bridge(["bridge.limits.max_connections=4"]) as rb:
        rb.client.status()  # one connection: ours
        ctx = zmq.Context()
        try:
            socks = []
            for _ in range(10):
                d = ctx.socket(zmq.DEALER)
                d.linger = 0
                d.connect(rb.server.endpoints["commands"])
                socks.append(d)
            guard = rb.server._guard
            wait_until(lambda: rb.server.counters.connections_closed >= 7, what="7 closed")
            assert sum(not c.closed for c in guard.conns.values()) <= 4
            assert rb.client.status()["counters"]["internal_errors"] == 0  # ours still served
        finally:
            for d in socks:
                d.close(0)
            ctx.term()


def test_a_small_multipart_wrench_message_is_dropped_and_the_stream_goes_on():
    with run_bridge() as rb:
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.linger = 0
        pub.connect(rb.server.endpoints["wrench"])
        sample = msgpack.packb({"version": 1, "t": time.time(), "force": [5.0, 0, 0]})
        try:
            wait_until(  # resent until connected; the conflated socket of old aborted here
                lambda: pub.send_multipart([sample, sample]) or rb.server.counters.wrench_bad,
                what="multi-frame sample dropped",
            )
            assert rb.server.counters.wrench_applied == 0
            wait_until(
                lambda: rb.client.send_wrench([5.0, 0, 0]) or rb.server.counters.wrench_applied,
                what="a single-frame sample applied",
            )
        finally:
            pub.close(0)
            ctx.term()
