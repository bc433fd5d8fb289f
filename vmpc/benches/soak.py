"""``vmpc bench soak``: does the loop survive a long wallclock run with everything going at once?

A real ``vmpc sim --bridge`` process (wallclock timing, loopback, ports picked by the OS) runs for
``duration`` s while clients in this process, each with its own socket, do what users and
hostile peers do:

- a pusher: random pushes (seeded) within the configured caps, mostly on the EE, some on other
  links, with a torque now and then;
- a wrench stream: ``send_wrench`` at 50 Hz, a slow sine plus low-pass noise;
- a swapper: a terminal swap every ``swap_period_s``, alternating between the value model and the
  quadratic terminal (``swap_value`` and ``clear_value`` in turn);
- a watcher: the newest state ~50 times a second, each checked for non-finite q, v and tau;
- a fuzzer, at a bounded rate: random bytes, truncated and malformed msgpack, lying length
  prefixes, deep nesting, wrong types and versions, NaN/inf and huge numbers, over-limit and
  unknown commands, path-traversal swaps, multi-frame messages, frames over the size limit and
  over libzmq's hard cap, a multi-megabyte multi-frame flood now and then, garbage wrench
  samples, raw TCP bytes on every port, and a new identity every few messages.

The loop runs in its own process so that a crash is seen from outside (exit code, signal) and
its memory is measured from outside: VmRSS, open file descriptors and threads from /proc every
``sample_every_s``. Why the RSS is reported twice: the run log (:class:`mpc.loop.RunLog`) is
allocated for the whole run up front but its pages become resident only as the ticks write them,
~0.3 MB per second of run at 1 kHz, which is expected growth, not a leak. The "net" figures
subtract the log bytes written by each sample's tick (from the log's own layout); growth over the
second half is the steadier measure (the first half includes warm-up: first swaps, first
refusals, allocator arenas). At the end the run's ``summary.json`` gives non-finite torques,
deadline misses, fallbacks, watchdog events and the bridge's counters.

Goal: no crash, no non-finite torque (in the summary or in any state seen), no fuzz message
applied, the bridge answering a status request after the fuzzing and no internal error of the
bridge, most swaps to the model accepted (a soak that never swaps one in has not tested swaps),
and at most :data:`GOAL_RSS_GROWTH_MB` of RSS growth net of the run log.

:func:`bench_soak` writes ``bench_soak.json`` and ``soak_rss.png`` and returns a
:class:`SoakResult`; it prints nothing (progress goes to its ``log`` callback).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack
import numpy as np
import zmq

from mpc.bridge.client import BridgeClient, BridgeTimeout, CommandRefused
from mpc.io import atomic_write_text

__all__ = [
    "GOAL_RSS_GROWTH_MB",
    "ClientCounts",
    "FuzzCounts",
    "RssSample",
    "SoakResult",
    "bench_soak",
]

GOAL_RSS_GROWTH_MB = 50.0  # over the whole run, net of the run log's pages

_HARD_SIZE_FACTOR = 8  # libzmq drops a peer whose frame exceeds this many max_message_bytes
_WRENCH_HZ = 50.0  # streamed samples per second (the server goes stale after 50 ms of silence)
_WATCH_HZ = 50.0
_STATUS_EVERY_S = 0.25  # the main loop's status requests: sim time for the schedule and the log
_FLOOD_FIRST_S, _FLOOD_EVERY_S = 1.0, 15.0  # multi-frame floods (each ~1.5x the byte budget)
_ENDPOINTS = re.compile(r"bridge: state (\S+), commands (\S+), wrench (\S+)")


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RssSample:
    """One look at the loop process from outside."""

    wall_s: float  # [s] since the bridge first answered
    sim_t: float | None  # [s] sim time of the newest status reply (None: none yet)
    rss_mb: float  # VmRSS [MB]
    log_mb: float  # [MB] run-log bytes the loop has written by ``sim_t`` (expected growth)
    fds: int  # open file descriptors (sockets of rotating clients must not pile up)
    threads: int

    @property
    def net_mb(self) -> float:
        return self.rss_mb - self.log_mb


@dataclass(frozen=True)
class ClientCounts:
    """What the well-behaved clients sent and what came back."""

    pushes_sent: int
    pushes_accepted: int
    push_refusals: dict[str, int]  # reason (numbers masked) -> count
    push_timeouts: int
    wrench_samples: int
    swaps_requested: int
    swaps_accepted: int
    value_swaps_requested: int  # of which: to the value model (the others go back to quadratic)
    value_swaps_accepted: int
    swap_refusals: dict[str, int]
    swap_timeouts: int
    states_seen: int
    states_nonfinite: int  # states with a non-finite q, v or tau
    status_ok: int
    status_failed: int
    errors: list[str]  # unexpected exceptions in a client thread (should be empty)


@dataclass(frozen=True)
class FuzzCounts:
    """What the fuzzer sent and what the server made of it."""

    sent: int  # messages (a multi-frame message, a raw TCP connection: one each)
    by_kind: dict[str, int]
    bytes_sent: int
    replies: int
    error_replies: int
    undecodable_replies: int  # replies that are not msgpack (must be 0)
    ok_replies: int  # to the deliberately valid status requests with odd ids
    applied: int  # ok replies to anything else: a fuzz message was applied (must be 0)
    applied_by_kind: dict[str, int]
    identities: int  # DEALER sockets used (each connection is a new identity at the ROUTER)
    send_errors: int  # sends that would have blocked (queue full): dropped
    alive_after: bool  # the server answered a status request after the fuzzer's last message


@dataclass(frozen=True)
class SoakResult:
    """What :func:`bench_soak` measured; :meth:`to_dict` is the ``bench_soak.json`` object."""

    config: str
    value: str
    overrides: list[str]
    duration_s: float  # sim seconds asked for
    swap_period_s: float
    fuzz_rate_hz: float
    seed: int
    exit_code: int | None  # None: it never exited and was killed
    crash_reason: str  # "" when the process ran to its end and exited 0
    summary: dict[str, Any] | None  # the run's summary.json (None: not written)
    clients: ClientCounts
    fuzz: FuzzCounts
    rss: list[RssSample]
    wall_s: float  # of the whole benchmark
    run_dir: Path  # the run's outputs (summary.json, log.npz, its stdout and stderr)
    json_path: Path
    plot_path: Path | None
    load_1min: list[float]  # at the start and at the end
    date: str

    # -- the figures the table and the goal use ---------------------------------------------------
    @property
    def crashed(self) -> bool:
        return bool(self.crash_reason)

    def _summary_int(self, key: str) -> int | None:
        return None if self.summary is None else int(self.summary[key])

    @property
    def nonfinite_torques(self) -> int | None:
        return self._summary_int("nonfinite_torques")

    @property
    def deadline_misses(self) -> int | None:
        return self._summary_int("deadline_misses")

    @property
    def internal_errors(self) -> int | None:
        if self.summary is None or "bridge" not in self.summary:
            return None
        return int(self.summary["bridge"]["internal_errors"])

    def _growth(self, net: bool, second_half: bool) -> float | None:
        s = self.rss
        if len(s) < 2:
            return None
        first = s[0]
        if second_half:  # the first sample at or after the middle of the sampled span
            mid = s[0].wall_s + (s[-1].wall_s - s[0].wall_s) / 2
            first = next(x for x in s if x.wall_s >= mid)
        a, b = (first.net_mb, s[-1].net_mb) if net else (first.rss_mb, s[-1].rss_mb)
        return b - a

    @property
    def rss_start_mb(self) -> float | None:
        return self.rss[0].rss_mb if self.rss else None

    @property
    def rss_end_mb(self) -> float | None:
        return self.rss[-1].rss_mb if self.rss else None

    @property
    def rss_max_mb(self) -> float | None:
        return max(x.rss_mb for x in self.rss) if self.rss else None

    @property
    def rss_growth_mb(self) -> float | None:
        return self._growth(net=False, second_half=False)

    @property
    def rss_growth_second_half_mb(self) -> float | None:
        return self._growth(net=False, second_half=True)

    @property
    def net_growth_mb(self) -> float | None:
        """RSS growth minus the run log's pages written over the same span."""
        return self._growth(net=True, second_half=False)

    @property
    def net_growth_second_half_mb(self) -> float | None:
        return self._growth(net=True, second_half=True)

    @property
    def goal_failures(self) -> list[str]:
        """Why the run misses the goal, one phrase per reason (empty: it meets it)."""
        out = []
        if self.crashed:
            out.append("crashed")
        if self.summary is None:
            out.append("no summary.json")
        elif self.nonfinite_torques:
            out.append(f"{self.nonfinite_torques} non-finite torques")
        if self.clients.states_nonfinite:
            out.append(f"{self.clients.states_nonfinite} non-finite states")
        if self.fuzz.applied:
            out.append(f"{self.fuzz.applied} fuzz messages applied")
        if self.fuzz.undecodable_replies:
            out.append(f"{self.fuzz.undecodable_replies} replies not msgpack")
        if not self.fuzz.alive_after:
            out.append("no answer after fuzzing")
        if self.internal_errors:
            out.append(f"{self.internal_errors} bridge internal errors")
        c = self.clients
        if c.value_swaps_accepted < c.value_swaps_requested / 2:  # a few may meet a fuzz swap
            out.append(f"{c.value_swaps_accepted} of {c.value_swaps_requested} swaps to the model")
        growth = self.net_growth_mb
        if growth is None:
            out.append("too few RSS samples")
        elif growth > GOAL_RSS_GROWTH_MB:
            out.append(f"RSS grew {growth:.1f} MB net of the run log")
        return out

    @property
    def meets_goal(self) -> bool:
        return not self.goal_failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "value": self.value,
            "overrides": self.overrides,
            "duration_s": self.duration_s,
            "swap_period_s": self.swap_period_s,
            "fuzz_rate_hz": self.fuzz_rate_hz,
            "seed": self.seed,
            "crashed": self.crashed,
            "exit_code": self.exit_code,
            "crash_reason": self.crash_reason,
            "nonfinite_torques": self.nonfinite_torques,
            "deadline_misses": self.deadline_misses,
            "bridge_internal_errors": self.internal_errors,
            "rss_mb": {
                "start": self.rss_start_mb,
                "end": self.rss_end_mb,
                "max": self.rss_max_mb,
                "growth": self.rss_growth_mb,
                "growth_second_half": self.rss_growth_second_half_mb,
                "net_growth": self.net_growth_mb,
                "net_growth_second_half": self.net_growth_second_half_mb,
                "goal_net_growth": GOAL_RSS_GROWTH_MB,
            },
            "meets_goal": self.meets_goal,
            "goal_failures": self.goal_failures,
            "clients": asdict(self.clients),
            "fuzz": asdict(self.fuzz),
            "summary": self.summary,
            "rss_samples": [{**asdict(x), "net_mb": x.net_mb} for x in self.rss],
            "wall_s": self.wall_s,
            "run_dir": str(self.run_dir),
            "load_1min": self.load_1min,
            "date": self.date,
        }


# -- small helpers ---------------------------------------------------------------------------------
def _quiet(_msg: str) -> None:
    pass


def _proc_status(pid: int) -> tuple[float, int] | None:
    """(VmRSS [MB], threads) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
    if rss is None or threads is None:  # a zombie has no VmRSS
        return None
    return int(rss.group(1)) / 1024, int(threads.group(1))


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _reason_key(reason: str) -> str:
    """A refusal reason with its numbers masked, so that refusals group by kind."""
    return re.sub(r"-?\d[\d.]*(e[-+]?\d+)?", "#", reason)[:90]


def _log_bytes_per_tick(replan_every: int, nq: int) -> float:
    """Bytes of the run log that one tick writes, from :class:`RunLog`'s own layout: every
    per-step row except ``ee_position`` (filled after the loop) and a replan row every
    ``replan_every`` ticks. ``force`` and ``torque`` rows count too: they are written on every
    tick that has a wrench applied, and the wrench stream keeps one applied all along."""
    from mpc.loop.run_log import RunLog

    lg = RunLog(nq, 2, 1)  # two step rows and one replan row tell the two kinds apart
    lg.steps, lg.replans = 2, 1
    per_step = per_replan = 0.0
    for name, a in lg.arrays().items():
        if len(a) == 2 and name != "ee_position":
            per_step += a.nbytes / 2
        elif len(a) == 1:
            per_replan += a.nbytes
    return per_step + per_replan / replan_every


def _pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


class _Counts:
    """Counters shared by the client threads (each writes its own keys; the GIL keeps ``+=``
    on a Counter entry from one thread consistent)."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self.push_refusals: Counter[str] = Counter()
        self.swap_refusals: Counter[str] = Counter()
        self.errors: list[str] = []


def _guarded(name: str, counts: _Counts, body: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            body()
        except Exception as exc:  # reported in the result: a client's bug must not hide
            counts.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])

    return threading.Thread(target=run, name=f"soak-{name}", daemon=True)


# -- the well-behaved clients ----------------------------------------------------------------------
def _pusher(
    ep: str,
    links: list[str],
    max_force: float,
    max_torque: float,
    rng: np.random.Generator,
    stop: threading.Event,
    counts: _Counts,
) -> None:
    """A push every 0.2-1 s: 5 N up to a third of the force cap (so that a few can overlap with
    the stream under the total cap), 20-300 ms, 70 % on the EE, 20 % with a torque."""
    c = counts.c
    with BridgeClient(ep, timeout_s=2.0) as client:
        while not stop.wait(float(rng.uniform(0.2, 1.0))):
            d = rng.normal(size=3)
            force = d / np.linalg.norm(d) * rng.uniform(5.0, min(60.0, max_force / 3))
            torque = None
            if rng.random() < 0.2:
                m = rng.normal(size=3)
                torque = (m / np.linalg.norm(m) * rng.uniform(0.0, max_torque / 10)).tolist()
            link = None if rng.random() < 0.7 or not links else str(rng.choice(links))
            c["pushes_sent"] += 1
            try:
                client.push(force.tolist(), torque, float(rng.uniform(0.02, 0.3)), link)
                c["pushes_accepted"] += 1
            except CommandRefused as exc:
                counts.push_refusals[_reason_key(exc.reason)] += 1
            except BridgeTimeout:
                c["push_timeouts"] += 1


def _wrench_streamer(
    ep: str, wrench_ep: str, rng: np.random.Generator, stop: threading.Event, counts: _Counts
) -> None:
    """A 15 N sine (0.3 Hz) along a random direction plus 3 N of low-pass noise, at 50 Hz."""
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    noise = np.zeros(3)
    dt = 1.0 / _WRENCH_HZ
    with BridgeClient(ep, wrench_address=wrench_ep) as client:
        t0 = time.monotonic()
        n = 0
        while not stop.is_set():
            t = n * dt
            noise += 0.2 * (rng.normal(size=3) - noise)
            f = 15.0 * math.sin(2 * math.pi * 0.3 * t) * d + 3.0 * noise
            client.send_wrench(f.tolist())
            counts.c["wrench_samples"] += 1
            n += 1
            stop.wait(max(0.0, t0 + n * dt - time.monotonic()))


def _swapper(ep: str, value: str, period: float, stop: threading.Event, counts: _Counts) -> None:
    """Every ``period`` s: the value, back with clear_value, the value, back with
    swap_value('quadratic'), ... Each call waits for the server's reply (installed or refused)."""
    c = counts.c
    with BridgeClient(ep, timeout_s=2.0) as client:
        i = 0
        while not stop.wait(period):
            to_value = i % 2 == 0
            c["swaps_requested"] += 1
            c["value_swaps_requested"] += to_value
            try:
                if to_value:
                    client.swap_value(value, timeout_s=15.0)
                elif i % 4 == 1:
                    client.clear_value(timeout_s=15.0)
                else:
                    client.swap_value("quadratic", timeout_s=15.0)
                c["swaps_accepted"] += 1
                c["value_swaps_accepted"] += to_value
            except CommandRefused as exc:
                counts.swap_refusals[_reason_key(exc.reason)] += 1
            except BridgeTimeout:
                c["swap_timeouts"] += 1
            i += 1


def _watcher(ep: str, state_ep: str, stop: threading.Event, counts: _Counts) -> None:
    """The newest state ~50 times a second, like a dashboard; every one checked for non-finite
    numbers (the loop's output as a client sees it)."""
    c = counts.c
    with BridgeClient(ep, state_address=state_ep) as client:
        while not stop.is_set():
            states = cast(
                Generator[dict[str, Any], None, None], client.states(latest=True, timeout_s=0.5)
            )
            try:
                for s in states:
                    c["states_seen"] += 1
                    if not all(math.isfinite(x) for k in ("q", "v", "tau") for x in s[k]):
                        c["states_nonfinite"] += 1
                    if stop.wait(1.0 / _WATCH_HZ):
                        break
            except BridgeTimeout:
                pass  # the loop paused or is busy: look again
            finally:
                states.close()


# -- the fuzzer ------------------------------------------------------------------------------------
_NAN, _INF = float("nan"), float("inf")
_PUSH = {"version": 1, "cmd": "push", "force": [1.0, 2.0, 3.0], "duration": 0.1}
# A ZMTP 3.0 NULL greeting: what a real peer sends first, so garbage after it reaches the parser.
_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00NULL" + b"\x00" * 16 + b"\x00" + b"\x00" * 31

_WRONG_TYPES: list[dict[str, Any]] = [
    {**_PUSH, "force": "7"},
    {**_PUSH, "force": [1.0, 2.0]},
    {**_PUSH, "force": [1.0, 2.0, 3.0, 4.0]},
    {**_PUSH, "force": [[1.0], [2.0], [3.0]]},
    {**_PUSH, "force": [True, False, True]},
    {**_PUSH, "force": ["1", "2", "3"]},
    {**_PUSH, "force": {"x": 1.0}},
    {**_PUSH, "duration": "0.1"},
    {**_PUSH, "duration": None},
    {**_PUSH, "link": 5},
    {**_PUSH, "link": ""},
    {**_PUSH, "link": "x" * 500},
    {**_PUSH, "link": "no_such_link"},  # well-formed: refused by the server, not the schema
    {**_PUSH, "torque": [0.0, 0.0]},
    {"version": 1, "cmd": "push", "force": [1.0, 0.0, 0.0]},  # no duration
    {"version": 1, "cmd": "set_target", "target": {"x": 1}},
    {"version": 1, "cmd": "set_target", "target": None},
    {"version": 1, "cmd": "set_target", "target": [0.4, 0.4]},
    {"version": 1, "cmd": "set_target", "target": "0.4 0.4 0.6"},
    {"version": 1, "cmd": "swap_value", "path": 123},
    {"version": 1, "cmd": "swap_value", "path": ""},
    {"version": 1, "cmd": "swap_value", "path": None},
    {"version": 1, "cmd": "swap_value", "path": "quadratic", "force": "yes"},
    {"version": 1, "cmd": "status", "extra": 1},
    {"version": 1, "cmd": "pause", "now": True},  # an unknown field: refused before it can pause
    {"version": 1, "cmd": "resume", "x": None},
    {"version": 1, "cmd": "clear_value", "path": "none"},
    {"version": 1, "cmd": "status", "id": [1]},
    {"version": 1, "cmd": "status", "id": {"a": 1}},
    {"version": 1, "cmd": "status", "id": 1.5},
    {"version": 1, "cmd": "status", "id": "x" * 65},
]
_BAD_SWAP_PATHS = [
    "/etc/passwd",
    "../../../../etc/shadow",
    "models/../pyproject.toml",
    "models/" + "../" * 40 + "etc/passwd",
    "models/no_such_model.pt",
    "models/TRUSTED.sha256",  # inside the allowed folder, not a model: refused by the loader
    "models",
    "~/.ssh/id_rsa",
    "models/\x00iiwa_dvp.pt",
    "file:///etc/passwd",
    "x" * 2000,
    "NONE",
    "quadratic ",
]
# Request ids at the edges of what the schema allows: these status requests must be answered.
_VALID_ODD_IDS: list[Any] = [2**53, -(2**53), "x" * 64, ""]
_LYING = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion elements
    b"\xdf\xff\xff\xff\xff\xa1a",  # map32 of 4 billion pairs
    b"\xdb\xff\xff\xff\xffabc",  # str32 of 4 GB
    b"\xc6\xff\xff\xff\xff\x00",  # bin32 of 4 GB
    b"\xc9\xff\xff\xff\xff\x01ab",  # ext32 of 4 GB
    b"\xdc\xff\xff" + b"\xc0" * 10,  # array16 of 65535, 10 given
    b"\x8f" + b"\xa1a\x01" * 3,  # fixmap of 15, 3 given
]
_EXT = [
    b"\xd4\x01\x00",  # fixext1 of an unknown type
    b"\xd6\xff\x00\x00\x00\x00",  # timestamp32
    b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # timestamp64 with nanoseconds out of range
    b"\xc7\x03\x05abc",  # ext8
    b"\x82\xa7version\x01\xa3cmd\xd6\xff\x00\x00\x00\x00",  # {version: 1, cmd: <timestamp>}
]


class _Fuzzer:
    """Sends one malformed or hostile message every ``1 / rate`` s until ``stop``; counts
    sends and replies. Everything it sends must be refused: an ok reply to anything but the
    deliberately valid status requests counts as ``applied``."""

    def __init__(
        self,
        endpoints: dict[str, str],
        max_bytes: int,
        max_pending_bytes: int,
        rate_hz: float,
        rng: np.random.Generator,
        stop: threading.Event,
    ) -> None:
        self.ep = endpoints
        self.max_bytes, self.hard_cap = max_bytes, _HARD_SIZE_FACTOR * max_bytes
        self.flood_bytes = int(1.5 * max_pending_bytes)
        self.rate, self.rng, self.stop = rate_hz, rng, stop
        self.ctx = zmq.Context()
        self.dealer: zmq.Socket | None = None
        self.wrench: zmq.Socket | None = None
        self.wrench_sent = 0
        self.ids: dict[int, str] = {}  # request ids we gave -> kind (to name what got applied)
        self.next_id = 1_000_000
        self.by_kind: Counter[str] = Counter()
        self.applied_by_kind: Counter[str] = Counter()
        self.n = Counter[str]()
        # Weighted kinds of messages on the command socket, plus the special ones.
        self.kinds: list[tuple[str, float, Callable[[], Any]]] = [
            ("random_bytes", 10, lambda: self.rng.bytes(int(self.rng.integers(0, 300)))),
            ("truncated", 6, self._truncated),
            ("not_a_map", 4, lambda: _pack(self._pick([[1, 2], 42, "push", None, 1.5, b"\0"]))),
            ("bad_keys", 3, lambda: _pack(self._pick([{1: 2}, {b"version": 1}, {1.5: "x"}]))),
            ("bad_version", 5, self._bad_version),
            ("unknown_cmd", 5, self._unknown_cmd),
            ("wrong_types", 10, lambda: dict(self._pick(_WRONG_TYPES))),
            ("non_finite", 8, self._non_finite),
            ("huge_numbers", 6, self._huge),
            ("over_limits", 6, self._over_limits),
            ("bad_swap_path", 1, self._bad_swap),
            ("deep_nesting", 2, self._deep),
            ("lying_lengths", 3, lambda: self._pick(_LYING)),
            ("ext_types", 3, lambda: self._pick(_EXT)),
            ("empty_frame", 2, lambda: b""),
            ("valid_odd_id", 2, self._valid_odd_id),
            ("multipart", 4, self._multipart),
            ("oversize", 3, self._oversize),
            ("over_hard_cap", 1, self._over_hard_cap),
            ("wrench_garbage", 10, lambda: None),
            ("raw_tcp", 1, lambda: None),
        ]
        w = np.array([k[1] for k in self.kinds], float)
        self.p = w / w.sum()

    # -- message makers ---------------------------------------------------------------------------
    def _pick(self, options: list[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def _truncated(self) -> bytes:
        full = _pack({**_PUSH, "id": 7})
        return full[: int(self.rng.integers(0, len(full)))]

    def _bad_version(self) -> dict[str, Any]:
        v = self._pick([0, 2, -1, "1", 1.0, True, None, [1], 2**64 - 1, -(2**63), {"v": 1}])
        return {"version": v, "cmd": "status"}

    def _unknown_cmd(self) -> dict[str, Any]:
        names = ["rm -rf /", "", "PUSH", "__class__", "status\x00", "push ", 12, None, b"push"]
        if self.rng.random() < 0.1:
            return {"version": 1}
        return {"version": 1, "cmd": self._pick([*names, ["push"], {"cmd": "push"}, "é" * 40])}

    def _non_finite(self) -> dict[str, Any]:
        v = self._pick([_NAN, _INF, -_INF])
        return dict(
            self._pick(
                [
                    {**_PUSH, "force": [v, 0.0, 0.0]},
                    {**_PUSH, "torque": [0.0, v, 0.0]},
                    {**_PUSH, "duration": v},
                    {"version": 1, "cmd": "set_target", "target": [v, 0.0, 0.5]},
                    {"version": 1, "cmd": "set_target", "target": [0.4, 0.4, v]},
                    {"version": 1, "cmd": "status", "id": v},
                ]
            )
        )

    def _huge(self) -> dict[str, Any]:
        big = self._pick([1e308, -1e308, 1.7976931348623157e308, 2**63 - 1, -(2**63), 2**64 - 1])
        return dict(
            self._pick(
                [
                    {**_PUSH, "force": [big, 0.0, 0.0]},
                    {**_PUSH, "torque": [big, big, big]},
                    {**_PUSH, "duration": abs(big)},
                    {"version": 1, "cmd": "set_target", "target": [big, big, big]},
                    {"version": 1, "cmd": "status", "id": big},
                    {"version": big, "cmd": "status"},
                ]
            )
        )

    def _over_limits(self) -> dict[str, Any]:
        return dict(
            self._pick(
                [
                    {**_PUSH, "force": [1e4, 0.0, 0.0]},
                    {**_PUSH, "torque": [0.0, 0.0, 1e3]},
                    {**_PUSH, "duration": 1e3},
                    {**_PUSH, "duration": -1.0},
                    {**_PUSH, "duration": 0.0},
                    {"version": 1, "cmd": "set_target", "target": [5.0, 0.0, 0.5]},
                    {"version": 1, "cmd": "set_target", "target": [0.0, 0.0, -1.0]},
                    {"version": 1, "cmd": "set_target", "target": [0.4, 0.4, 10.0]},
                ]
            )
        )

    def _bad_swap(self) -> dict[str, Any]:
        return {"version": 1, "cmd": "swap_value", "path": self._pick(_BAD_SWAP_PATHS)}

    def _deep(self) -> bytes:
        n = int(self.rng.integers(100, 3000))
        return self._pick([b"\x91" * n + b"\xc0", b"\x81\xa1a" * (n // 3) + b"\xc0"])

    def _valid_odd_id(self) -> dict[str, Any]:
        return {"version": 1, "cmd": "status", "id": self._pick(_VALID_ODD_IDS)}

    def _multipart(self) -> list[bytes]:
        parts = [_pack(_PUSH), self.rng.bytes(40), b""]
        return [self._pick(parts) for _ in range(int(self.rng.integers(2, 11)))]

    def _oversize(self) -> bytes:
        if self.rng.random() < 0.5:
            return _pack({"version": 1, "cmd": "status", "pad": "x" * (self.max_bytes + 10)})
        return self.rng.bytes(int(self.rng.integers(self.max_bytes + 1, self.hard_cap)))

    def _over_hard_cap(self) -> bytes:
        return self.rng.bytes(int(self.rng.integers(self.hard_cap + 1, 4 * self.hard_cap)))

    def _wrench_frames(self) -> list[bytes]:
        now = time.time()
        sample = {"version": 1, "t": now, "force": [1.0, 0.0, 0.0]}
        return list(
            self._pick(
                [
                    [self.rng.bytes(int(self.rng.integers(0, 200)))],
                    [_pack({**sample, "force": [_NAN, 0.0, 0.0]})],
                    [_pack({**sample, "force": [0.0, _INF, 0.0]})],
                    [_pack({**sample, "force": [1e9, 0.0, 0.0]})],
                    [_pack({**sample, "torque": [0.0, 0.0, 1e6]})],
                    [_pack({**sample, "link": "no_such_link", "force": [1e9, 0.0, 0.0]})],
                    [_pack({**sample, "t": "now"})],
                    [_pack({**sample, "t": _NAN})],
                    [_pack({**sample, "force": [1.0, 2.0]})],
                    [_pack({**sample, "version": 2})],
                    [_pack({**sample, "extra": True})],
                    [_pack(sample), _pack(sample)],  # samples are single frames
                    [self.rng.bytes(self.max_bytes + 100)],
                    [b""],
                ]
            )
        )

    # -- sockets ----------------------------------------------------------------------------------
    def _new_dealer(self) -> zmq.Socket:
        if self.dealer is not None:
            self._drain(0.01)
            self.dealer.close(linger=0)
        d = self.ctx.socket(zmq.DEALER)
        d.linger = 0
        if self.rng.random() < 0.5:  # a chosen identity (first byte 0 is libzmq's)
            d.setsockopt(
                zmq.ROUTING_ID,
                bytes([int(self.rng.integers(1, 256))])
                + self.rng.bytes(int(self.rng.integers(0, 31))),
            )
        d.connect(self.ep["commands"])
        self.dealer = d
        self.n["identities"] += 1
        return d

    def _drain(self, wait_s: float) -> None:
        d = self.dealer
        if d is None:
            return
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if not d.poll(max(0, int(left * 1000)), zmq.POLLIN):
                return
            frame = d.recv()
            self.n["replies"] += 1
            try:
                r = msgpack.unpackb(frame, raw=False)
            except Exception:  # the server's reply must decode: count it if not
                self.n["undecodable_replies"] += 1
                continue
            if not isinstance(r, dict) or not r.get("ok"):
                self.n["error_replies"] += 1
                continue
            rid = r.get("id")
            if r.get("cmd") == "status" and rid in _VALID_ODD_IDS and rid not in self.ids:
                self.n["ok_replies"] += 1  # a deliberately valid status request
            else:
                kind = self.ids.get(rid, f"cmd {r.get('cmd')!r}") if isinstance(rid, int) else ""
                self.applied_by_kind[kind or f"cmd {r.get('cmd')!r}"] += 1

    def _send_command(self, kind: str, msg: Any) -> None:
        d = self.dealer or self._new_dealer()
        frames: list[bytes]
        if isinstance(msg, dict):
            if "id" not in msg:
                self.next_id += 1
                msg["id"] = self.next_id
                self.ids[self.next_id] = kind
                self.ids.pop(self.next_id - 10_000, None)  # replies come within ms: keep the recent
            frames = [_pack(msg)]
        elif isinstance(msg, list):
            frames = msg
        else:
            frames = [msg]
        try:
            d.send_multipart(frames, zmq.NOBLOCK)
            self.n["bytes_sent"] += sum(len(f) for f in frames)
        except zmq.Again:
            self.n["send_errors"] += 1
        if kind == "over_hard_cap" or self.rng.random() < 0.05:
            self._new_dealer()  # libzmq drops that connection anyway; else a fresh identity

    def _send_wrench(self) -> None:
        if self.wrench is None or self.wrench_sent > 300:
            if self.wrench is not None:
                self.wrench.close(linger=0)
            self.wrench = self.ctx.socket(zmq.PUB)
            self.wrench.linger = 0
            self.wrench.connect(self.ep["wrench"])
            self.wrench_sent = 0
        frames = self._wrench_frames()
        try:
            self.wrench.send_multipart(frames, zmq.NOBLOCK)
            self.n["bytes_sent"] += sum(len(f) for f in frames)
        except zmq.Again:
            self.n["send_errors"] += 1
        self.wrench_sent += 1

    def _raw_tcp(self) -> None:
        """Bytes straight onto a TCP connection to one of the three ports: nothing, garbage,
        or a valid ZMTP 3.0 greeting followed by garbage; then a close. Garbage whose first byte
        is not 0xff makes libzmq take the peer for ZMTP/1.0 and parse the rest as frames."""
        host, port = self._pick(list(self.ep.values())).rsplit("//", 1)[1].rsplit(":", 1)
        payload = self._pick([b"", self.rng.bytes(int(self.rng.integers(1, 2000)))])
        if self.rng.random() < 0.5:
            payload = _GREETING + self.rng.bytes(int(self.rng.integers(1, 500)))
        try:
            with socket.create_connection((host, int(port)), timeout=1.0) as s:
                s.sendall(payload)
        except OSError:
            self.n["send_errors"] += 1
        self.n["bytes_sent"] += len(payload)

    def _flood(self) -> None:
        """One multi-frame message of ~1.5x the server's byte budget for unread bytes on a fresh
        connection: the server must close that connection rather than buffer it whole."""
        part = 16 << 10
        d = self.ctx.socket(zmq.DEALER)
        d.linger = 0
        d.sndhwm = 0
        d.connect(self.ep["commands"])
        self.n["identities"] += 1
        frames = [self.rng.bytes(part)] * (self.flood_bytes // part + 1)
        try:
            d.send_multipart(frames, zmq.NOBLOCK)
            self.n["bytes_sent"] += part * len(frames)
        except zmq.Again:
            self.n["send_errors"] += 1
        self.stop.wait(0.5)  # let it go out before the socket closes (linger 0 drops the rest)
        d.close(linger=0)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._new_dealer()
            interval = 1.0 / self.rate
            t0 = next_t = time.monotonic()
            next_flood = t0 + _FLOOD_FIRST_S
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_flood:
                    self.by_kind["multipart_flood"] += 1
                    self._flood()
                    next_flood = now + _FLOOD_EVERY_S
                    next_t = time.monotonic()  # no catch-up burst after the flood's pause
                    continue
                i = int(self.rng.choice(len(self.kinds), p=self.p))
                kind, _, make = self.kinds[i]
                self.by_kind[kind] += 1
                if kind == "wrench_garbage":
                    self._send_wrench()
                elif kind == "raw_tcp":
                    self._raw_tcp()
                else:
                    self._send_command(kind, make())
                next_t += interval
                self._drain(max(0.0, next_t - time.monotonic()))  # waits for replies meanwhile
            self._drain(0.2)
        finally:
            self.ctx.destroy(linger=0)

    def counts(self, alive_after: bool) -> FuzzCounts:
        return FuzzCounts(
            sent=sum(self.by_kind.values()),
            by_kind=dict(sorted(self.by_kind.items())),
            bytes_sent=self.n["bytes_sent"],
            replies=self.n["replies"],
            error_replies=self.n["error_replies"],
            undecodable_replies=self.n["undecodable_replies"],
            ok_replies=self.n["ok_replies"],
            applied=sum(self.applied_by_kind.values()),
            applied_by_kind=dict(self.applied_by_kind),
            identities=self.n["identities"],
            send_errors=self.n["send_errors"],
            alive_after=alive_after,
        )


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class _Server:
    """The ``vmpc sim --bridge`` process and where its output goes."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    endpoints: dict[str, str] = field(default_factory=dict)

    def wait_endpoints(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = _ENDPOINTS.search(self.stderr.read_text(errors="replace"))
            if m:
                self.endpoints = dict(zip(("state", "commands", "wrench"), m.groups(), strict=True))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = self.stderr.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])


def _crash_reason(code: int | None, server: _Server) -> str:
    if code == 0:
        return ""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}: {server.stderr_tail()}"
    return f"exit code {code}: {server.stderr_tail()}"


def _plot(samples: list[RssSample], path: Path, title: str) -> Path | None:
    if len(samples) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpc.io import save_figure

    t = np.array([s.wall_s for s in samples])
    rss = np.array([s.rss_mb for s in samples])
    net = np.array([s.net_mb for s in samples])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, rss, label="VmRSS")
    ax.plot(t, net + (rss[0] - net[0]), label="VmRSS net of the run log (from the same start)")
    ax.axhline(
        rss[0] + GOAL_RSS_GROWTH_MB,
        color="tab:red",
        ls="--",
        lw=1,
        label=f"goal: start + {GOAL_RSS_GROWTH_MB:g} MB, net",
    )
    ax.set_xlabel("wall time since the bridge answered [s]")
    ax.set_ylabel("MB")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _sample(pid: int, wall_s: float, sim_t: float, log_mb_per_s: float) -> RssSample | None:
    ps = _proc_status(pid)
    if ps is None:
        return None
    return RssSample(wall_s, sim_t, ps[0], sim_t * log_mb_per_s, _fd_count(pid), ps[1])


def _progress_line(
    sim_t: float, duration: float, samples: list[RssSample], c: Counter[str], fuzz_sent: int
) -> str:
    s0, s1 = samples[0], samples[-1]
    return (
        f"  {sim_t:6.0f}/{duration:g} s: RSS {s1.rss_mb:.1f} MB ({s1.rss_mb - s0.rss_mb:+.1f}, "
        f"net of the run log {s1.net_mb - s0.net_mb:+.1f}), fds {s1.fds}, pushes "
        f"{c['pushes_sent']}, swaps {c['swaps_accepted']}/{c['swaps_requested']}, fuzz "
        f"{fuzz_sent}, status {c['status_ok']} ok / {c['status_failed']} failed"
    )


def bench_soak(
    config: str,
    duration: float = 600.0,
    value: str = "models/iiwa_dvp.pt",
    out: Path = Path("runs/bench"),
    *,
    swap_period_s: float = 3.0,
    seed: int = 0,
    fuzz_rate_hz: float = 100.0,
    sample_every_s: float | None = None,
    overrides: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> SoakResult:
    """Run the soak for ``duration`` s of sim time (wallclock: as much wall time), write
    ``out/bench_soak.json`` and ``out/soak_rss.png`` and return the result. The run's own
    outputs (summary.json, log.npz, its stdout and stderr) go to ``out/soak-run/``.
    ``sample_every_s`` defaults to 1-5 s depending on the duration. A bad config or override
    raises :class:`~mpc.errors.ConfigError` here, before anything starts."""
    from mpc.config import load_config

    say = log or _quiet
    overrides = list(overrides or [])
    # Loopback (the default bind) on ports the OS picks; the user's overrides come last so
    # that they may pin the ports.
    sets = ["bridge.state_port=0", "bridge.command_port=0", "bridge.wrench_port=0", *overrides]
    cfg = load_config(config, [*sets, f"run.duration={duration}", "mpc.timing=wallclock"])
    lim = cfg.bridge.limits
    sample_every = sample_every_s or min(5.0, max(1.0, duration / 120))
    progress_every = min(30.0, max(5.0, duration / 6))
    tail = min(2.0, 0.25 * duration)  # the clients stop this long before the run ends
    out = Path(out)
    run_dir = out / "soak-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)  # never read a previous run's
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    load0 = os.getloadavg()[0]
    wall_start = time.monotonic()

    # The real entry point, as a user starts it; its own process so that a crash is an exit
    # status here and its memory is measured from outside.
    cmd = [
        sys.executable,
        "-m",
        "vmpc",
        "sim",
        "--config",
        config,
        "--duration",
        f"{duration:g}",
        "--bridge",
        "--timing",
        "wallclock",
        "--seed",
        str(seed),
        "-q",
        "--no-plots",
        "--out",
        str(run_dir),
        *(a for s in sets for a in ("--set", s)),
    ]
    say(f"bench soak: {duration:g} s wallclock run of {config} with the bridge ...")
    stdout, stderr = run_dir / "server_stdout.txt", run_dir / "server_stderr.txt"
    with open(stdout, "wb") as fo, open(stderr, "wb") as fe:
        server = _Server(subprocess.Popen(cmd, stdout=fo, stderr=fe), stdout, stderr)
    stop = threading.Event()
    counts = _Counts()
    c = counts.c
    threads: list[threading.Thread] = []
    fuzzer: _Fuzzer | None = None
    samples: list[RssSample] = []
    alive_after = killed = False
    problem = ""  # why the run was given up on, when it was
    try:
        st: dict[str, Any] | None = None
        monitor: BridgeClient | None = None
        if server.wait_endpoints(120.0):
            monitor = BridgeClient(server.endpoints["commands"], timeout_s=2.0)
            deadline = time.monotonic() + 60.0
            while st is None and time.monotonic() < deadline and server.proc.poll() is None:
                try:
                    st = monitor.status()
                except BridgeTimeout:
                    continue
            if st is None and server.proc.poll() is None:
                problem = "the bridge printed its endpoints but never answered a status request"
        if monitor is not None and st is not None:
            ep = server.endpoints
            say(f"bench soak: bridge up at {ep['commands']}; clients and fuzzer running")
            pid = server.proc.pid
            log_mb_per_s = (
                _log_bytes_per_tick(cfg.mpc.replan_every, len(st["joint_names"]))
                / float(st["sim_dt"])
                / 2**20
            )  # [MB per sim second]
            links = [n for n in st["links"] if n != st["ee_link"]]
            cmd_ep = ep["commands"]
            bodies: dict[str, Callable[[], None]] = {
                "pusher": lambda: _pusher(
                    cmd_ep, links, lim.max_force_n, lim.max_torque_nm, rngs[0], stop, counts
                ),
                "wrench": lambda: _wrench_streamer(cmd_ep, ep["wrench"], rngs[1], stop, counts),
                "swapper": lambda: _swapper(cmd_ep, value, swap_period_s, stop, counts),
                "watcher": lambda: _watcher(cmd_ep, ep["state"], stop, counts),
            }
            if fuzz_rate_hz > 0:
                fuzzer = _Fuzzer(
                    ep,
                    cfg.bridge.max_message_bytes,
                    lim.max_pending_bytes,
                    fuzz_rate_hz,
                    rngs[2],
                    stop,
                )
                bodies["fuzzer"] = fuzzer.run
            threads = [_guarded(name, counts, body) for name, body in bodies.items()]
            for th in threads:
                th.start()
            t0 = time.monotonic()
            sim_t = float(st["sim_time"])
            last_answer = t0
            next_sample, next_progress = t0, t0 + progress_every
            while server.proc.poll() is None:
                now = time.monotonic()
                try:
                    sim_t = float(monitor.status()["sim_time"])
                    c["status_ok"] += 1
                    last_answer = now
                except (BridgeTimeout, CommandRefused):
                    c["status_failed"] += 1
                if now >= next_sample:
                    sample = _sample(pid, now - t0, sim_t, log_mb_per_s)
                    if sample is not None:
                        samples.append(sample)
                    next_sample += sample_every
                if now >= next_progress and samples:
                    fuzz_sent = 0 if fuzzer is None else sum(fuzzer.by_kind.values())
                    say(_progress_line(sim_t, duration, samples, c, fuzz_sent))
                    next_progress += progress_every
                if sim_t >= duration - tail:
                    break
                if now - last_answer > 30.0:
                    problem = "the bridge stopped answering for 30 s (a hung loop?)"
                    break
                time.sleep(max(0.0, min(next_sample, now + _STATUS_EVERY_S) - time.monotonic()))
            stop.set()
            for th in threads:
                th.join(20.0)
            # The loop must still answer once every client, the fuzzer last, has stopped.
            for _ in range(3):
                if problem or server.proc.poll() is not None:
                    break
                try:
                    monitor.status()
                    alive_after = True
                    break
                except (BridgeTimeout, CommandRefused):
                    continue
        if monitor is not None:
            monitor.close()
        if not problem:
            say("bench soak: clients stopped; waiting for the run to write its outputs ...")
            try:
                server.proc.wait(timeout=60.0 + 0.2 * duration)
            except subprocess.TimeoutExpired:
                problem = "the run did not exit after its end"
        killed = bool(problem)
    finally:
        stop.set()
        if server.proc.poll() is None:  # given up, an error or Ctrl-C: never leave it running
            server.proc.kill()
            server.proc.wait()
    code = None if killed else server.proc.returncode
    crash = f"{problem} (killed)" if problem else _crash_reason(code, server)
    if not crash and not server.endpoints:
        crash = f"the bridge never came up: {server.stderr_tail()}"
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    clients = ClientCounts(
        pushes_sent=c["pushes_sent"],
        pushes_accepted=c["pushes_accepted"],
        push_refusals=dict(counts.push_refusals),
        push_timeouts=c["push_timeouts"],
        wrench_samples=c["wrench_samples"],
        swaps_requested=c["swaps_requested"],
        swaps_accepted=c["swaps_accepted"],
        value_swaps_requested=c["value_swaps_requested"],
        value_swaps_accepted=c["value_swaps_accepted"],
        swap_refusals=dict(counts.swap_refusals),
        swap_timeouts=c["swap_timeouts"],
        states_seen=c["states_seen"],
        states_nonfinite=c["states_nonfinite"],
        status_ok=c["status_ok"],
        status_failed=c["status_failed"],
        errors=list(counts.errors),
    )
    fuzz = (
        fuzzer.counts(alive_after)
        if fuzzer is not None
        else FuzzCounts(0, {}, 0, 0, 0, 0, 0, 0, {}, 0, 0, alive_after)
    )
    title = (
        f"vmpc bench soak: {config}, {duration:g} s wallclock, a swap every {swap_period_s:g} s, "
        f"fuzz {fuzz_rate_hz:g} msg/s"
    )
    result = SoakResult(
        config=config,
        value=value,
        overrides=overrides,
        duration_s=duration,
        swap_period_s=swap_period_s,
        fuzz_rate_hz=fuzz_rate_hz,
        seed=seed,
        exit_code=code,
        crash_reason=crash,
        summary=summary,
        clients=clients,
        fuzz=fuzz,
        rss=samples,
        wall_s=time.monotonic() - wall_start,
        run_dir=run_dir,
        json_path=out / "bench_soak.json",
        plot_path=_plot(samples, out / "soak_rss.png", title),
        load_1min=[load0, os.getloadavg()[0]],
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
