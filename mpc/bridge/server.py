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

import logging
import math
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
_MAX_PEERS = 256  # rate-limit buckets kept; the oldest is forgotten first
_RING = 1 << 16  # hook durations kept for the percentiles
_RCVMORE = zmq.RCVMORE  # getsockopt(_RCVMORE) is ~3x cheaper than the .rcvmore attribute
_SEND_MORE = zmq.NOBLOCK | zmq.SNDMORE


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
        self._since_pub = spec.publish_every  # so the first tick publishes
        self._seq = 0
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()
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
        preload_swap_support()

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
        if spec.curve is not None:  # the ZAP handler must exist before any socket binds
            self._server_keys, self._auth, self._allow = start_authenticator(
                self._ctx, spec.curve.server_secret_key, spec.curve.clients_dir
            )
        if spec.bind not in ("127.0.0.1", "localhost") and spec.curve is None:
            log.warning(
                "bridge: listening on %s without CURVE: anyone who reaches this "
                "machine can push the arm (set bridge.curve)",
                spec.bind,
            )
        hard_cap = _HARD_SIZE_FACTOR * spec.max_message_bytes
        self._pub = self._socket(zmq.PUB)
        if spec.conflate:
            self._pub.conflate = 1  # newest state only, per subscriber; single frames only
        else:
            self._pub.sndhwm = 100
        self._cmd = self._socket(zmq.ROUTER)
        self._cmd.rcvhwm, self._cmd.sndhwm = 200, 100  # bounded memory under a flood
        self._cmd.maxmsgsize = hard_cap
        self._wrench = self._socket(zmq.SUB)
        self._wrench.conflate = 1  # latest sample wins
        self._wrench.maxmsgsize = hard_cap
        self._wrench.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoints = {
            "state": self._bind(self._pub, spec.state_port),
            "commands": self._bind(self._cmd, spec.command_port),
            "wrench": self._bind(self._wrench, spec.wrench_port),
        }
        self._poll_items = [(self._cmd, zmq.POLLIN), (self._wrench, zmq.POLLIN)]

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
            for sock, _ in zmq.zmq_poll(self._poll_items, 0):  # zero timeout: never waits
                if sock is self._cmd:
                    commands = True
                else:
                    wrench = True
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
        """Apply the newest valid sample waiting; True if there was one."""
        c, lim = self.counters, self.spec.limits
        latest, latest_link = None, 0
        for _ in range(self.spec.messages_per_tick):
            try:
                frame = self._wrench.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            c.wrench_received += 1
            try:
                s = parse_wrench(frame, self._max_bytes)
            except BadMessage as exc:
                c.wrench_bad += 1
                log.debug("bridge: bad wrench sample: %s", exc)
                continue
            link = self._links.get(s.link) if s.link is not None else loop.arm.ee_link
            reason = check_wrench(s.force, s.torque, lim.max_force_n, lim.max_torque_nm)
            newest = latest.t if latest is not None else self._stream_t
            if reason or link is None or newest is not None and s.t < newest:
                c.wrench_refused += 1
                continue
            latest = s
            latest_link = link
        if latest is None:
            return False
        loop.disturbances.set_stream(latest_link, np.array(latest.force), np.array(latest.torque))
        self._stream_seen, self._stream_t = t, latest.t
        self._stream_link = self._link_names.get(latest_link, str(latest_link))
        c.wrench_applied += 1
        return True

    def _stream_went_stale(self, loop: ClosedLoop) -> None:
        loop.disturbances.clear_stream()  # back to zero: a quiet stream never holds a push on
        self._stream_seen = self._stream_t = None
        self.counters.wrench_stale += 1

    # -- commands ---------------------------------------------------------------------------------
    def _read_commands(self, loop: ClosedLoop, k: int, t: float) -> None:
        sock, budget = self._cmd, self._frame_budget
        handled = 0
        while handled < self.spec.messages_per_tick and budget > 0:
            if self._skip_parts:  # the rest of a message with too many frames
                while budget > 0 and self._skip_parts:
                    sock.recv(zmq.NOBLOCK)
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
            payload = sock.recv(zmq.NOBLOCK)
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
            if not self._take_token(ident):
                c.rate_limited += 1
                raise Refused(
                    f"more than {self.spec.command_rate_hz:g} commands/s (burst "
                    f"{self.spec.command_burst}); slow down"
                )
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

    def _take_token(self, ident: bytes) -> bool:
        now = time.monotonic()
        b = self._buckets.get(ident)
        if b is None:
            b = self._buckets[ident] = _Bucket(float(self.spec.command_burst), now)
            if len(self._buckets) > _MAX_PEERS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ident)
            b.tokens = min(
                float(self.spec.command_burst),
                b.tokens + (now - b.last) * self.spec.command_rate_hz,
            )
            b.last = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

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
            loop.disturbances.add(
                Push(t, cmd.duration, link, np.array(cmd.force), np.array(cmd.torque), "bridge")
            )
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
            if spec not in BUILTIN_TERMINALS and allowed_real_path(spec, allowed) is None:
                raise Refused(
                    f"'{spec}' is not 'none', 'quadratic' or a file inside "
                    f"value.allowed_dirs ({', '.join(allowed)})"
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
