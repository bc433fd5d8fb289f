"""The bridge's server side: three ZeroMQ sockets served from a tick hook of a closed loop.

- state (PUB): every ``publish_every`` ticks, one single-frame message ``<topic> <msgpack>``;
- commands (ROUTER): each command frame from a DEALER gets exactly one reply frame;
- wrench (SUB, conflated): the latest streamed wrench sample wins, and a stream that goes quiet
  for ``stale_after_s`` of sim time goes back to zero.

Everything happens in the loop's thread at a tick boundary, before control: one zero-timeout
poll, at most ``messages_per_tick`` command frames, every send non-blocking. A message is checked
against its schema and the configured limits before it touches the loop; a bad one is counted
and answered with a one-line reason, and the loop goes on.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import select
import socket
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import msgpack
import numpy as np
import zmq

from sim import Push

from ..controller import SolveStatus
from ..errors import VmpcError
from ..loop.hot_swap import SwapEvent, preload_swap_support
from ..loop.runner import ClosedLoop
from ..value.artifact import allowed_real_path
from ..value.terminal import value_bases
from .keys import start_authenticator
from .messages import (
    SCHEMA_VERSION,
    BadMessage,
    ClearValueCommand,
    Command,
    PauseCommand,
    PushCommand,
    ResumeCommand,
    SetTargetCommand,
    StatusCommand,
    SwapValueCommand,
    check_wrench,
    make_reply,
    parse_command,
    parse_wrench,
)
from .spec import BridgeSpec

__all__ = ["BridgeError", "BridgeServer", "BridgeCounters", "Refused"]

log = logging.getLogger("vmpc.bridge")

BUILTIN_TERMINALS = ("none", "quadratic")
_HARD_SIZE_FACTOR = 8  # libzmq drops peers whose frames exceed this many max_message_bytes
_MAX_PENDING_SWAPS = 2
_RING = 1 << 16  # hook durations kept for the percentiles
_RCVMORE = zmq.RCVMORE  # getsockopt(_RCVMORE) is ~3x cheaper than the .rcvmore attribute
_SEND_MORE = zmq.NOBLOCK | zmq.SNDMORE
_SRCFD = 2  # zmq_msg_get(ZMQ_SRCFD): the file descriptor a frame was read from
_CMD_RCVHWM = 64  # complete command messages queued per client connection
# [B] kernel receive buffer per command connection: the TCP window, so it sets how fast a peer
# can push bytes into libzmq between two checks of the guard (~56 MB/s on loopback at 4 KB,
# ~900 MB/s at 64 KB); commands are small and rate-limited, so a small window costs nothing.
_CMD_RCVBUF_MIN, _CMD_RCVBUF_MAX = 4 << 10, 64 << 10
_FRAME_OVERHEAD = 64  # [B] wire bytes per frame besides the payload (ZMTP header, CURVE box)
_HANDSHAKE_SLACK = 2 << 10  # [B] greeting and handshake bytes of a connection (CURVE: ~600)
_TCPI_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in Linux's struct tcp_info (>= 4.1)
_TCP_INFO_LEN = _TCPI_BYTES_RECEIVED + 8
_U64 = struct.Struct("=Q")
_GUARD_CHECKS = 32  # connections looked at per tick, at most
_WRENCH_RCVHWM = 16  # wrench samples queued per sender connection
_WRENCH_FRAMES_PER_TICK = 32  # wrench frames read per tick, at most (decoded: far fewer)
_GUARD_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class BridgeError(VmpcError):
    """The bridge cannot start (port taken, bad key folder, ...)."""


class Refused(Exception):
    """A well-formed command that the server will not apply; the message says why."""


@dataclass
class BridgeCounters:
    """Every frame that reaches a socket is counted exactly once per column group."""

    received: int = 0  # command frames read
    bad: int = 0  # not decodable or not matching a schema
    refused: int = 0  # well-formed but refused: limits, workspace, rate, timing, swap refused
    rate_limited: int = 0  # of which: above the command rate
    applied: int = 0  # applied (status, pause and resume included)
    published: int = 0  # state messages sent
    publish_dropped: int = 0  # never blocked: dropped instead
    wrench_received: int = 0
    wrench_bad: int = 0
    wrench_refused: int = 0  # above the limits, unknown link, or older than the latest
    wrench_applied: int = 0
    wrench_stale: int = 0  # times the stream went quiet and was zeroed
    connections_closed: int = 0  # command connections closed for sending more than they may
    internal_errors: int = 0  # exceptions inside the bridge itself (should stay 0)


@dataclass
class _Bucket:
    tokens: float
    last: float  # [s] time.monotonic()


@dataclass
class _HookTimes:
    """Durations of the tick hook [us], in a ring, for p50/p99/max in the summary."""

    ring: np.ndarray = field(default_factory=lambda: np.zeros(_RING))
    n: int = 0
    max_us: float = 0.0

    def add(self, us: float) -> None:
        self.ring[self.n % _RING] = us
        self.n += 1
        if us > self.max_us:
            self.max_us = us

    def stats(self) -> dict[str, float | int | None]:
        if self.n == 0:
            return {"calls": 0, "p50": None, "p99": None, "max": None}
        a = self.ring[: min(self.n, _RING)]
        return {
            "calls": self.n,
            "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)),
            "max": self.max_us,
        }


class _Bucket2:
    """A token bucket shared by every client (the global rate limit)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), time.monotonic()

    def refill(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return self.tokens


class _Conn:
    __slots__ = ("closed", "pending", "received", "sock", "src")

    def __init__(self, sock: socket.socket, src: int) -> None:
        self.sock, self.src = sock, src
        self.pending = -_HANDSHAKE_SLACK  # bytes received minus bytes read (as of its last check)
        self.received = 0  # TCP_INFO bytes received at its last check
        self.closed = False


class _ConnectionGuard:
    """A byte budget over the command connections, enforced below ZeroMQ.

    libzmq makes no frame of a multi-frame message visible before its last frame has arrived,
    and neither the HWM (it counts whole messages) nor MAXMSGSIZE (it caps one frame) bounds
    one message of many frames: without this, one message buffers whole in the server.
    A socket monitor tells the file descriptor of every accepted connection; the guard keeps a
    duplicate of it, in an edge-triggered epoll set so that only connections that received
    data are looked at. For those, the bytes the kernel received (TCP_INFO) minus the bytes of
    the frames read from the connection (ZMQ_SRCFD of each frame) is what waits unread, in the
    kernel or in libzmq. While the total over all connections is above the budget, the
    connection holding the most is shut down; libzmq then drops its partial message and frees
    the memory. The kernel buffer is kept small (SO_RCVBUF) so that little can arrive between
    two checks, connections beyond ``max_connections`` are shut down as they come, and at most
    ``_GUARD_CHECKS`` connections are looked at per tick (a few us each).
    Linux only (elsewhere the guard is off and the server says so once)."""

    def __init__(self, sock: zmq.Socket, limit: int, max_connections: int) -> None:
        self.limit, self.max_connections = limit, max_connections
        self.by_src: dict[int, _Conn] = {}  # libzmq's fd -> connection
        self.by_dup: dict[int, _Conn] = {}  # our duplicate's fd -> connection
        self.dirty: dict[int, None] = {}  # duplicates with data since their last check
        self.total = 0  # sum of ``pending``
        self.closed = 0
        self.mon: zmq.Socket | None = None
        self.ep: select.epoll | None = None
        if sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO"):
            self.mon = sock.get_monitor_socket(_GUARD_EVENTS)
            self.mon.linger = 0
            self.ep = select.epoll()
        else:
            log.warning("bridge: no byte budget on command connections on %s", sys.platform)

    @property
    def conns(self) -> dict[int, _Conn]:
        return self.by_src

    def credit(self, frame: zmq.Frame) -> None:
        try:
            src = frame.get(_SRCFD)
        except zmq.ZMQError:
            # A ZMTP/1.0 peer's messages carry no source descriptor (raw TCP bytes not starting
            # with 0xff are taken for one); their bytes were never charged to a connection.
            return
        c = self.by_src.get(src)
        if c is not None:
            n = len(frame) + _FRAME_OVERHEAD
            c.pending -= n
            self.total -= n

    def events(self) -> None:
        """Connections accepted and gone (the monitor socket is readable)."""
        mon = self.mon
        assert mon is not None and self.ep is not None
        while True:
            try:
                frames = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, fd = struct.unpack("=Hi", frames[0][:6])
            if event == zmq.EVENT_ACCEPTED:
                self._forget(fd)  # a missed disconnect: the number was reused
                try:
                    dup = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
                except OSError:
                    continue
                c = _Conn(dup, fd)
                self.by_src[fd] = self.by_dup[dup.fileno()] = c
                self.total += c.pending
                self.ep.register(dup.fileno(), select.EPOLLIN | select.EPOLLET)
                if len(self.by_src) > self.max_connections:
                    self._shut(c)
            elif event == zmq.EVENT_DISCONNECTED:
                self._forget(fd)

    def _forget(self, src: int) -> None:
        c = self.by_src.pop(src, None)
        if c is None:
            return
        dup = c.sock.fileno()
        self.by_dup.pop(dup, None)
        self.dirty.pop(dup, None)
        self.total -= c.pending
        try:
            assert self.ep is not None
            self.ep.unregister(dup)
        except (OSError, ValueError):
            pass
        c.sock.close()  # the last reference after libzmq's close: the peer sees FIN

    def _shut(self, c: _Conn) -> None:
        c.closed = True
        self.total -= c.pending
        c.pending = 0
        self.closed += 1
        try:
            c.sock.shutdown(socket.SHUT_RDWR)  # libzmq reads EOF and drops the connection
        except OSError:
            pass
        if self.closed == 1:
            log.warning(
                "bridge: closed a command connection: more than limits.max_pending_bytes "
                "sent and not read (a multi-frame flood?) or more than limits.max_connections"
            )

    def check(self) -> None:
        """Once a tick: look at (up to _GUARD_CHECKS) connections that received data."""
        ep = self.ep
        if ep is None:
            return
        dirty = self.dirty
        for fd, _ in ep.poll(0):
            dirty[fd] = None
        if not dirty:
            return
        for fd in list(itertools.islice(dirty, _GUARD_CHECKS)):
            del dirty[fd]
            c = self.by_dup.get(fd)
            if c is None or c.closed:
                continue
            try:
                info = c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
            except OSError:
                continue
            if len(info) < _TCP_INFO_LEN:
                continue
            received = _U64.unpack_from(info, _TCPI_BYTES_RECEIVED)[0]
            fresh = received - c.received  # ``pending`` already counts what was read
            c.received = received
            c.pending += fresh
            self.total += fresh
        while self.total > self.limit:
            worst = max(self.by_src.values(), key=lambda c: -1 if c.closed else c.pending)
            if worst.closed or worst.pending <= 0:
                break
            self._shut(worst)

    def close(self, sock: zmq.Socket) -> None:
        for src in list(self.by_src):
            self._forget(src)
        if self.ep is not None:
            self.ep.close()
        if self.mon is not None:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass


def _is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def _endpoint(bind: str, port: int) -> str:
    return f"tcp://{bind}:{port if port else '*'}"


class BridgeServer:
    """Binds the bridge's sockets for one :class:`~mpc.runner.ClosedLoop` and serves them from
    a tick hook. Use as a context manager, or call :meth:`attach` and then :meth:`close` once
    the loop has returned (the sockets belong to the loop's thread)."""

    def __init__(self, loop: ClosedLoop, spec: BridgeSpec | None = None) -> None:
        self.loop = loop
        self.spec = spec = spec or loop.cfg.bridge
        self.counters = BridgeCounters()
        self._times = _HookTimes()
        self._ctx = zmq.Context()
        self._auth: Any = None  # ThreadAuthenticator while CURVE is on
        self._allow: Any = None
        self._closed = False
        self._sockets: list[zmq.Socket] = []
        try:
            self._open(spec)
        except BaseException:
            self._close_sockets()
            raise
        arm = loop.arm
        self._links = {name: i for i, name in enumerate(arm.link_names)}
        self._link_names = {i: name for name, i in self._links.items()}
        self._ee_name = self._link_names.get(arm.ee_link, str(arm.ee_link))
        self._prefix = spec.topic.encode() + b" "
        self._max_bytes = spec.max_message_bytes
        self._frame_budget = 4 * spec.messages_per_tick + 8
        self._skip_parts = False  # in the middle of a command with too many frames
        self._wrench_skip = False  # in the middle of a wrench message with too many frames
        self._since_pub = spec.publish_every  # so the first tick publishes
        self._seq = 0
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()
        lim = spec.limits
        self._global = _Bucket2(lim.global_rate_hz, lim.global_burst)
        self._pushes: list[tuple[float, float, float]] = []  # bridge pushes: end, |f|, |tau|
        self._pending_swaps: dict[int, tuple[bytes, int | str | None, str]] = {}
        self._swap_ids = 0
        self._stream_seen: float | None = None  # [s] sim time of the latest applied sample
        self._stream_t: float | None = None  # sender time of the latest applied sample
        self._stream_link = ""
        ws = loop.cfg.task.workspace
        self._ws_min, self._ws_max = np.asarray(ws.min, float), np.asarray(ws.max, float)
        self._wallclock = loop.cfg.mpc.timing == "wallclock"
        self._hook = self._on_tick
        self._static: dict[str, Any] | None = None
        self._nq = loop.robot.nq
        self._packer = msgpack.Packer(use_bin_type=True)  # reused: packb builds one per call
        self._status_names = {int(st): st.name for st in SolveStatus}  # Enum.name is slow
        preload_swap_support(loop.cfg.value.evaluator)

    # -- set-up and tear-down ---------------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        self._sockets.append(sock)
        sock.linger = self.spec.linger_ms  # an infinite default would hang close() and term()
        if self._server_keys is not None:
            self._server_keys.apply(sock)
        return sock

    def _bind(self, sock: zmq.Socket, port: int) -> str:
        ep = _endpoint(self.spec.bind, port)
        try:
            sock.bind(ep)
        except zmq.ZMQError as exc:
            raise BridgeError(f"bridge cannot listen on {ep}: {exc.strerror}") from None
        return str(sock.last_endpoint.decode())  # type: ignore[union-attr]  # bytes for TCP

    def _open(self, spec: BridgeSpec) -> None:
        self._server_keys = None
        self._guard: _ConnectionGuard | None = None
        self._wrench_guard: _ConnectionGuard | None = None
        if not _is_loopback(spec.bind) and spec.curve is None:
            if not spec.insecure:
                raise BridgeError(
                    f"bridge.bind={spec.bind} without bridge.curve would let anyone who reaches "
                    "this machine push the arm; set bridge.curve, or bridge.insecure: true"
                )
            log.warning(
                "bridge: listening on %s without CURVE (bridge.insecure: true): anyone who "
                "reaches this machine can push the arm",
                spec.bind,
            )
        if spec.curve is not None:  # the ZAP handler must exist before any socket binds
            self._server_keys, self._auth, self._allow = start_authenticator(
                self._ctx, spec.curve.server_secret_key, spec.curve.clients_dir
            )
        hard_cap = _HARD_SIZE_FACTOR * spec.max_message_bytes
        self._pub = self._socket(zmq.PUB)
        if spec.conflate:
            self._pub.conflate = 1  # newest state only, per subscriber; single frames only
        else:
            self._pub.sndhwm = 100
        rcvbuf = min(_CMD_RCVBUF_MAX, max(_CMD_RCVBUF_MIN, spec.max_message_bytes))
        lim = spec.limits
        self._cmd = self._socket(zmq.ROUTER)
        self._cmd.rcvhwm, self._cmd.sndhwm = _CMD_RCVHWM, 100  # bounded memory under a flood
        self._cmd.rcvbuf = rcvbuf  # set before bind: accepted connections inherit it
        self._cmd.maxmsgsize = hard_cap
        self._guard = _ConnectionGuard(self._cmd, lim.max_pending_bytes, lim.max_connections)
        # No CONFLATE here: libzmq aborts the whole process (fq.cpp:80 "!_more") when a conflated
        # SUB reads part of a multi-frame message, which any sender could send. The queue is
        # short instead, drained every tick, and the newest sample wins.
        self._wrench = self._socket(zmq.SUB)
        self._wrench.rcvhwm = _WRENCH_RCVHWM
        self._wrench.rcvbuf = rcvbuf
        self._wrench.maxmsgsize = hard_cap
        self._wrench.setsockopt(zmq.SUBSCRIBE, b"")
        self._wrench_guard = _ConnectionGuard(
            self._wrench, lim.max_pending_bytes, lim.max_connections
        )
        for g in (self._guard, self._wrench_guard):
            if g.mon is not None:
                self._sockets.append(g.mon)
        self.endpoints = {
            "state": self._bind(self._pub, spec.state_port),
            "commands": self._bind(self._cmd, spec.command_port),
            "wrench": self._bind(self._wrench, spec.wrench_port),
        }
        self._poll_items = [(self._cmd, zmq.POLLIN), (self._wrench, zmq.POLLIN)]
        self._monitors: dict[zmq.Socket, _ConnectionGuard] = {}
        for g in (self._guard, self._wrench_guard):
            if g.mon is not None:  # connections come and go: one more socket in the same poll
                self._poll_items.append((g.mon, zmq.POLLIN))
                self._monitors[g.mon] = g

    def attach(self) -> BridgeServer:
        if self._hook not in self.loop.tick_hooks:
            self.loop.tick_hooks.append(self._hook)
        return self

    def __enter__(self) -> BridgeServer:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach, answer pending swaps, close every socket with LINGER set. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._hook in self.loop.tick_hooks:
            self.loop.tick_hooks.remove(self._hook)
        for ident, rid, name in self._pending_swaps.values():
            self._send_reply(
                ident, make_reply(rid, name, "the run ended before the swap was installed")
            )
        self._pending_swaps.clear()
        if self._stream_seen is not None:
            self.loop.disturbances.clear_stream()
        self._close_sockets()

    def _close_sockets(self) -> None:
        if self._guard is not None:
            self._guard.close(self._cmd)
        if self._wrench_guard is not None:
            self._wrench_guard.close(self._wrench)
        for sock in self._sockets:
            sock.close(linger=self.spec.linger_ms)
        self._sockets.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()

    # -- the tick hook ----------------------------------------------------------------------------
    def _on_tick(self, loop: ClosedLoop, k: int, t: float) -> None:
        t0 = time.perf_counter()
        try:
            self._since_pub += 1
            if self._since_pub >= self.spec.publish_every:
                self._since_pub = 0
                self._publish(loop, k, t)
            commands = wrench = False
            guard, wguard = self._guard, self._wrench_guard
            for sock, _ in zmq.zmq_poll(self._poll_items, 0):  # zero timeout: never waits
                if sock is self._cmd:
                    commands = True
                elif sock is self._wrench:
                    wrench = True
                else:
                    self._monitors[sock].events()
            if guard is not None and wguard is not None:
                guard.check()
                wguard.check()
                self.counters.connections_closed = guard.closed + wguard.closed
            fresh = wrench and self._read_wrench(loop, t)
            if (
                not fresh
                and self._stream_seen is not None
                and t - self._stream_seen > self.spec.stale_after_s
            ):
                self._stream_went_stale(loop)
            if commands or self._skip_parts:
                self._read_commands(loop, k, t)
        except Exception:  # a bug of ours must not end the run: count it, say it once, go on
            self.counters.internal_errors += 1
            if self.counters.internal_errors == 1:
                log.exception("bridge: internal error (the run goes on; counted in summary)")
        self._times.add((time.perf_counter() - t0) * 1e6)

    # -- state stream -----------------------------------------------------------------------------
    def state(self, loop: ClosedLoop, k: int, t: float) -> dict[str, Any]:
        """The state message of this tick: measured state at the start of tick ``k``, with the
        torque, wrenches and target that were applied during tick ``k - 1``."""
        nq = self._nq
        x = loop.state
        xs = x.tolist()  # one conversion, then list slices: this runs up to 1000 times a second
        rep = loop.controller.last_report
        active = loop.disturbances.active
        stream = loop.disturbances.stream
        self._seq += 1
        return {
            "version": SCHEMA_VERSION,
            "seq": self._seq,
            "tick": k,
            "t": t,
            "wall_time": time.time(),
            "paused": loop.paused,
            "q": xs[:nq],
            "v": xs[nq:],
            "tau": loop.last_tau.tolist(),
            "ee": loop.robot.ee_position_world(x[:nq]).tolist(),
            "target": loop.target.tolist(),
            "solve_ms": rep.solve_ms,
            "iterations": rep.iterations,
            "solve_status": self._status_names[rep.status],
            "cost": rep.cost,
            "terminal": loop.ocp.terminal.label,
            "disturbances": [self._push_entry(p) for p in active] if active else [],
            "stream": None
            if stream is None
            else {
                "link": self._stream_link,
                "force": stream[1].tolist(),
                "torque": stream[2].tolist(),
                "since_s": 0.0 if self._stream_seen is None else t - self._stream_seen,
            },
        }

    def _push_entry(self, p: Push) -> dict[str, Any]:
        return {
            "link": self._link_names.get(p.link, str(p.link)),
            "force": p.force.tolist(),
            "torque": p.torque.tolist(),
            "start": p.start,
            "end": p.end,
            "source": p.source,
        }

    def _publish(self, loop: ClosedLoop, k: int, t: float) -> None:
        frame = self._prefix + self._packer.pack(self.state(loop, k, t))
        try:
            self._pub.send(frame, zmq.NOBLOCK)
            self.counters.published += 1
        except zmq.Again:
            self.counters.publish_dropped += 1

    # -- wrench stream ----------------------------------------------------------------------------
    def _read_wrench(self, loop: ClosedLoop, t: float) -> bool:
        """Apply the newest valid sample waiting; True if there was one.

        The queue is drained (reading a frame is cheap), then at most ``messages_per_tick``
        frames are decoded, newest first: the first valid one wins and the older ones are
        superseded without being decoded (counted in ``wrench_received`` only)."""
        c, lim = self.counters, self.spec.limits
        sock, guard = self._wrench, self._wrench_guard
        frames: list[bytes] = []
        for _ in range(_WRENCH_FRAMES_PER_TICK):
            try:
                part = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if guard is not None:
                guard.credit(part)
            more = bool(sock.getsockopt(_RCVMORE))
            if self._wrench_skip:  # the rest of a multi-frame message: dropped
                self._wrench_skip = more
                continue
            c.wrench_received += 1
            if more:  # samples are single frames
                self._wrench_skip = True
                c.wrench_bad += 1
                continue
            frames.append(part.bytes)
        for frame in frames[: -self.spec.messages_per_tick - 1 : -1]:
            try:
                s = parse_wrench(frame, self._max_bytes)
            except BadMessage as exc:
                c.wrench_bad += 1
                log.debug("bridge: bad wrench sample: %s", exc)
                continue
            link = self._links.get(s.link) if s.link is not None else loop.arm.ee_link
            reason = check_wrench(s.force, s.torque, lim.max_force_n, lim.max_torque_nm)
            if not reason:
                reason = self._check_totals(
                    t, math.hypot(*s.force), math.hypot(*s.torque), stream=True
                )
            if reason or link is None or self._stream_t is not None and s.t < self._stream_t:
                c.wrench_refused += 1
                continue
            loop.disturbances.set_stream(link, np.array(s.force), np.array(s.torque))
            self._stream_seen, self._stream_t = t, s.t
            self._stream_link = self._link_names.get(link, str(link))
            c.wrench_applied += 1
            return True
        return False

    def _stream_went_stale(self, loop: ClosedLoop) -> None:
        loop.disturbances.clear_stream()  # back to zero: a quiet stream never holds a push on
        self._stream_seen = self._stream_t = None
        self.counters.wrench_stale += 1

    # -- commands ---------------------------------------------------------------------------------
    def _read_commands(self, loop: ClosedLoop, k: int, t: float) -> None:
        sock, budget, guard = self._cmd, self._frame_budget, self._guard
        handled = 0
        while handled < self.spec.messages_per_tick and budget > 0:
            if self._skip_parts:  # the rest of a message with too many frames
                while budget > 0 and self._skip_parts:
                    part = sock.recv(zmq.NOBLOCK, copy=False)
                    if guard is not None:
                        guard.credit(part)
                    budget -= 1
                    self._skip_parts = bool(sock.getsockopt(_RCVMORE))
                continue
            try:
                ident = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            budget -= 1
            if not sock.getsockopt(_RCVMORE):
                continue  # a ROUTER always prepends the identity; nothing to answer
            frame = sock.recv(zmq.NOBLOCK, copy=False)
            if guard is not None:
                guard.credit(frame)
            payload = frame.bytes
            budget -= 1
            handled += 1
            self.counters.received += 1
            if sock.getsockopt(_RCVMORE):
                self._skip_parts = True
                self.counters.bad += 1
                self._send_reply(
                    ident,
                    make_reply(None, None, "one frame per command (use a DEALER socket, not REQ)"),
                )
                continue
            self._handle_frame(loop, k, t, ident, payload)

    def _handle_frame(
        self, loop: ClosedLoop, k: int, t: float, ident: bytes, payload: bytes
    ) -> None:
        c = self.counters
        try:
            cmd = parse_command(payload, self._max_bytes)
        except BadMessage as exc:
            c.bad += 1
            log.debug("bridge: bad command: %s", exc.reason)
            self._send_reply(ident, make_reply(exc.request_id, None, exc.reason))
            return
        try:
            reason = self._take_token(ident)
            if reason:
                c.rate_limited += 1
                raise Refused(reason)
            data = self._apply(loop, k, t, ident, cmd)
        except Refused as exc:
            c.refused += 1
            self._send_reply(ident, make_reply(cmd.id, cmd.cmd, str(exc)))
            return
        if data is None:
            return  # answered later (a swap, once validated off the control path)
        c.applied += 1
        self._send_reply(ident, make_reply(cmd.id, cmd.cmd, None, tick=k, t=t, **data))

    def _send_reply(self, ident: bytes, frame: bytes) -> None:
        try:  # a vanished or slow client loses its reply; the loop never waits for it
            self._cmd.send(ident, _SEND_MORE)
            self._cmd.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _take_token(self, ident: bytes) -> str:
        """'' if the command may go on, else why not. The global bucket is checked first and
        charged last, so that a client refused by its own limit costs the others nothing."""
        now = time.monotonic()
        g = self._global
        if g.refill(now) < 1.0:
            lim = self.spec.limits
            return (
                f"more than {lim.global_rate_hz:g} commands/s from all clients together "
                f"(burst {lim.global_burst}); slow down"
            )
        b = self._buckets.get(ident)
        if b is None:
            b = self._buckets[ident] = _Bucket(float(self.spec.command_burst), now)
            while len(self._buckets) > self.spec.limits.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ident)
            b.tokens = min(
                float(self.spec.command_burst),
                b.tokens + (now - b.last) * self.spec.command_rate_hz,
            )
            b.last = now
        if b.tokens < 1.0:
            return (
                f"more than {self.spec.command_rate_hz:g} commands/s (burst "
                f"{self.spec.command_burst}); slow down"
            )
        b.tokens -= 1.0
        g.tokens -= 1.0
        return ""

    def _bridge_totals(self, t: float) -> tuple[float, float]:
        """Sum of |force| and of |torque| of the bridge's active pushes and of the stream."""
        if self._pushes:
            self._pushes = [p for p in self._pushes if p[0] > t + 1e-12]
        f = sum(p[1] for p in self._pushes)
        tau = sum(p[2] for p in self._pushes)
        stream = self.loop.disturbances.stream
        if stream is not None:
            f += float(np.linalg.norm(stream[1]))
            tau += float(np.linalg.norm(stream[2]))
        return f, tau

    def _check_totals(self, t: float, force: float, torque: float, stream: bool) -> str:
        """'' if a push (or a stream sample replacing the stream) fits the totals."""
        lim = self.spec.limits
        f, tau = self._bridge_totals(t)
        cur = self.loop.disturbances.stream
        if stream and cur is not None:  # a sample replaces the current one
            f -= float(np.linalg.norm(cur[1]))
            tau -= float(np.linalg.norm(cur[2]))
        if f + force > lim.max_total_force_n * (1 + 1e-9):
            return (
                f"total bridge force would be {f + force:g} N, above the limit of "
                f"{lim.max_total_force_n:g} N (pushes and stream together)"
            )
        if tau + torque > lim.max_total_torque_nm * (1 + 1e-9):
            return (
                f"total bridge torque would be {tau + torque:g} N m, above the limit of "
                f"{lim.max_total_torque_nm:g} N m (pushes and stream together)"
            )
        return ""

    def _apply(
        self, loop: ClosedLoop, k: int, t: float, ident: bytes, cmd: Command
    ) -> dict[str, Any] | None:
        """Apply a well-formed command at this tick, or raise :class:`Refused`."""
        lim = self.spec.limits
        if isinstance(cmd, PushCommand):
            reason = check_wrench(cmd.force, cmd.torque, lim.max_force_n, lim.max_torque_nm)
            if reason:
                raise Refused(reason)
            if cmd.duration > lim.max_duration_s:
                raise Refused(
                    f"duration {cmd.duration:g} s is above the limit of {lim.max_duration_s:g} s"
                )
            link = self._link(loop, cmd.link)
            force, torque = np.array(cmd.force, float), np.array(cmd.torque, float)
            fn, tn = float(np.linalg.norm(force)), float(np.linalg.norm(torque))
            reason = self._check_totals(t, fn, tn, stream=False)
            if reason:
                raise Refused(reason)
            if len(self._pushes) >= lim.max_active_pushes:
                raise Refused(
                    f"{len(self._pushes)} bridge pushes are active, the limit is "
                    f"{lim.max_active_pushes}; wait for one to end"
                )
            loop.disturbances.add(Push(t, cmd.duration, link, force, torque, "bridge"))
            self._pushes.append((t + cmd.duration, fn, tn))
            return {"link": self._link_names.get(link, str(link)), "end": t + cmd.duration}
        if isinstance(cmd, SetTargetCommand):
            target = np.array(cmd.target)
            if np.any(target < self._ws_min) or np.any(target > self._ws_max):
                raise Refused(
                    f"target {cmd.target} is outside the workspace box "
                    f"{self._ws_min.tolist()} .. {self._ws_max.tolist()}"
                )
            try:
                loop.robot.check_reachable(target)
            except VmpcError as exc:
                raise Refused(str(exc)) from None
            loop.set_target(target)
            return {"target": cmd.target}
        if isinstance(cmd, (SwapValueCommand, ClearValueCommand)):
            self._swap(loop, ident, cmd)
            return None
        if isinstance(cmd, StatusCommand):
            return self.status(loop, k, t)
        if isinstance(cmd, (PauseCommand, ResumeCommand)):
            if not self._wallclock:
                raise Refused(f"{cmd.cmd} needs mpc.timing=wallclock (this run is lockstep)")
            loop.paused = isinstance(cmd, PauseCommand)
            return {"paused": loop.paused}
        raise Refused(f"command {cmd.cmd} is not served")  # unreachable: the schema lists them

    def _link(self, loop: ClosedLoop, name: str | None) -> int:
        if name is None:
            return loop.arm.ee_link
        link = self._links.get(name)
        if link is None:
            shown = ", ".join(self._links)
            raise Refused(f"unknown link '{name}'; links are: {shown}")
        return link

    def _swap(
        self, loop: ClosedLoop, ident: bytes, cmd: SwapValueCommand | ClearValueCommand
    ) -> None:
        if len(self._pending_swaps) >= _MAX_PENDING_SWAPS:
            raise Refused("a terminal swap is already being validated; wait for its reply")
        if isinstance(cmd, ClearValueCommand):
            spec, force = str(loop.configured_terminal), False
        else:
            spec, force = cmd.path, cmd.force
            if len(spec) > self.spec.limits.max_path_chars:
                raise Refused(f"path longer than {self.spec.limits.max_path_chars} characters")
            allowed = loop.cfg.value.allowed_dirs
            bases = value_bases(loop.cfg)  # relative entries: from the config file's folder
            if spec not in BUILTIN_TERMINALS and allowed_real_path(spec, allowed, bases) is None:
                raise Refused(
                    f"'{spec}' is not 'none', 'quadratic' or a file inside "
                    f"value.allowed_dirs ({', '.join(allowed)}, relative to {bases[0]})"
                )
        self._swap_ids += 1
        sid = self._swap_ids
        self._pending_swaps[sid] = (ident, cmd.id, cmd.cmd)
        loop.request_terminal(spec, force, callback=partial(self._swap_done, sid))
        return None

    def _swap_done(self, sid: int, event: SwapEvent) -> None:
        """Called by the loop (its thread, a tick boundary) once the swap is in or refused."""
        pending = self._pending_swaps.pop(sid, None)
        if pending is None or self._closed:
            return
        ident, rid, name = pending
        if event.accepted:
            self.counters.applied += 1
            reply = make_reply(
                rid,
                name,
                None,
                terminal=self.loop.ocp.terminal.label,
                model_id=event.model_id,
                note=event.reason,
                applied_t=event.applied_t,
            )
        else:
            self.counters.refused += 1
            reply = make_reply(rid, name, event.reason or "refused")
        self._send_reply(ident, reply)

    # -- reports ----------------------------------------------------------------------------------
    def status(self, loop: ClosedLoop, k: int, t: float) -> dict[str, Any]:
        if self._static is None:  # what cannot change during a run, built once
            cfg = loop.cfg
            self._static = {
                "schema": SCHEMA_VERSION,
                "timing": cfg.mpc.timing,
                "workspace": {"min": self._ws_min.tolist(), "max": self._ws_max.tolist()},
                "robot": cfg.robot.name,
                "joint_names": list(loop.robot.joint_names),
                "links": list(self._links),
                "ee_link": self._ee_name,
                "endpoints": dict(self.endpoints),
                "topic": self.spec.topic,
                "publish_every": self.spec.publish_every,
                "sim_dt": loop.arm.dt,
                "limits": self.spec.limits.model_dump(),
                "command_rate_hz": self.spec.command_rate_hz,
                "curve": self.spec.curve is not None,
            }
        out = dict(self._static)
        out.update(
            {
                "sim_time": t,
                "sim_tick": k,
                "paused": loop.paused,
                "terminal": loop.ocp.terminal.label,
                "configured_terminal": loop.configured_terminal,
                "swaps_pending": len(self._pending_swaps),
                "target": loop.target.tolist(),
                "counters": asdict(self.counters),
            }
        )
        return out

    def summary(self) -> dict[str, Any]:
        """What goes into summary.json under ``bridge``."""
        out: dict[str, Any] = {
            "endpoints": dict(self.endpoints),
            "curve": self.spec.curve is not None,
        }
        out.update(asdict(self.counters))
        out["auth_denied"] = self._allow.denied if self._allow is not None else 0
        stats = self._times.stats()
        out["hook_us"] = {
            k: (round(v, 2) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in stats.items()
        }
        return out
