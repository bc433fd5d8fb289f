"""``vmpc bench bridge``: what the bridge costs and how fast it answers, measured on loopback.

1. Latency: a wallclock run (paced to real time) publishes every tick (1 kHz); a subscriber in
   another process stamps each state message on receipt against the ``wall_time`` the server
   put in it just before sending. The same process sends a command every 0.2 s (alternately
   ``set_target`` and a 1 N ``push``) and counts the ticks from the newest state it had seen
   when sending to the tick the server applied it at, and to the first state that shows it.
2. Publish rate: the server's publish path in a tight loop for a second, with a subscriber that
   only counts, with and without conflation.
3. Real-time factor: short lockstep runs (as fast as possible) with the bridge off; on at the
   default period with nobody listening, and with a watcher (newest state, 20 Hz, like
   ``vmpc watch``); and on at every tick with a subscriber that takes every message. Interleaved
   with the order rotated, so that the drift of a shared machine hits every side alike.

Subscribers are small scripts in their own processes (zmq and msgpack only: they start in a
tenth of a second) so they never compete with the loop for the GIL.

:func:`bench_bridge` measures, writes ``bench_bridge.json`` and returns a
:class:`BridgeBenchResult`; it prints nothing (progress goes to its ``log`` callback, and the CLI
formats the result).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpc.io import atomic_write_text

__all__ = ["RTF_SIDES", "BridgeBenchResult", "BridgeGoals", "BridgeMachine", "bench_bridge"]

# The sides of the real-time-factor comparison: off; on at the default publish period with nobody
# listening (the bridge's own cost), with a `vmpc watch`-like subscriber (newest state, 20 Hz);
# and on at every tick with a subscriber that takes every message (the worst case: its process
# shares the cores). Value: (publish_every, probe mode), None for the bridge off.
RTF_SIDES: dict[str, tuple[int, str | None] | None] = {
    "off": None,
    "on_alone": (2, None),
    "on_watch": (2, "watch"),
    "on_all": (1, "drain"),
}


@dataclass(frozen=True)
class BridgeGoals:
    """The goals and whether this run met them."""

    p99_ms: float  # state latency p99 at most this [ms]
    rtf_ratio: float  # RTF with the bridge on (default period, watched) / off, at least this
    p99_met: bool
    rtf_met: bool


@dataclass(frozen=True)
class BridgeMachine:
    """Where the benchmark ran; the 1-minute load average at its start and end."""

    python: str
    processor: str
    machine: str
    cores: int | None
    load_1min: list[float]


@dataclass(frozen=True)
class BridgeBenchResult:
    """What :func:`bench_bridge` measured; :meth:`to_dict` is the ``bench_bridge.json`` object.

    ``latency``, ``publish_rate`` and ``rtf`` are the JSON blocks of the three measurements (see
    the module docstring); ``rtf`` holds, per side of :data:`RTF_SIDES`, every run, the best and
    the median, and for each bridge-on side ``ratio_best_<side>``, ``ratio_median_<side>`` and
    ``cpu_ratio_best_<side>``."""

    config: str
    overrides: list[str]
    duration_s: float  # sim seconds of the latency run
    repeats: int  # interleaved RTF runs per side
    rtf_seconds: float  # sim seconds of each RTF run
    goals: BridgeGoals
    latency: dict[str, Any]
    publish_rate: dict[str, dict[str, Any]]  # "conflate_on", "conflate_off"
    rtf: dict[str, Any]
    machine: BridgeMachine
    date: str
    json_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "duration_s": self.duration_s,
            "repeats": self.repeats,
            "rtf_seconds": self.rtf_seconds,
            "goals": asdict(self.goals),
            "latency": self.latency,
            "publish_rate": self.publish_rate,
            "rtf": self.rtf,
            "machine": asdict(self.machine),
            "date": self.date,
        }


def _quiet(_msg: str) -> None:
    pass


_PORTS = ["bridge.state_port=0", "bridge.command_port=0", "bridge.wrench_port=0"]

# The probe: ``mode state_ep cmd_ep out.json``; mode is latency, count, drain or watch. It stops
# once the stream has been quiet for 1.5 s (or after 60 s without any), writing a JSON summary.
_PROBE = r"""
import json, sys, time
import msgpack, zmq

mode, state_ep, cmd_ep, out = sys.argv[1:5]
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB); sub.linger = 0; sub.rcvhwm = 1000000
if mode == "watch":
    sub.conflate = 1  # like `vmpc watch`: the newest state, 20 times a second
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(state_ep)
dealer = ctx.socket(zmq.DEALER); dealer.linger = 0
dealer.connect(cmd_ep)
time.sleep(0.2)  # let the subscription reach the publisher before the loop starts
print("ready", flush=True)
lat, seqs, effects, replies = [], [], [], {}
pending = latest = last_msg = t_first = None
n_cmd, last_cmd, started = 0, 0.0, time.monotonic()
poller = zmq.Poller()
poller.register(sub, zmq.POLLIN); poller.register(dealer, zmq.POLLIN)
while True:
    if mode == "watch":
        time.sleep(0.05)
    ready = dict(poller.poll(100))
    now = time.monotonic()
    if dealer in ready:
        r = msgpack.unpackb(dealer.recv(), raw=False)
        if r.get("ok"):
            replies[r["id"]] = r["tick"]
    if sub in ready:
        while True:
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            recv_wall = time.time()
            last_msg = now
            t_first = t_first or now
            if mode != "latency":
                seqs.append(0)
                continue
            s = msgpack.unpackb(frame[frame.index(b" ") + 1:], raw=False)
            lat.append((recv_wall - s["wall_time"]) * 1e3)
            seqs.append(s["seq"])
            latest = s
            if pending is not None and pending["seen"](s):
                pending["visible_tick"] = s["tick"]
                effects.append({k: v for k, v in pending.items() if k != "seen"})
                pending = None
    if pending is not None and now - last_cmd > 1.0:  # never showed (lost states?)
        pending["visible_tick"] = None
        effects.append({k: v for k, v in pending.items() if k != "seen"})
        pending = None
    if (last_msg is not None and now - last_msg > 1.5) or now - started > 60:
        break
    if mode == "latency" and latest is not None and pending is None \
            and now - t_first > 0.5 and now - last_cmd > 0.2:
        n_cmd += 1
        last_cmd = now
        k_seen, t_seen = latest["tick"], latest["t"]
        if n_cmd % 2:  # two targets near the configured one, neither equal to it
            target = [0.45, 0.4, 0.6] if n_cmd % 4 == 1 else [0.4, 0.35, 0.6]
            msg = {"version": 1, "id": n_cmd, "cmd": "set_target", "target": target}
            seen = lambda s, g=target: all(abs(a - b) < 1e-12 for a, b in zip(s["target"], g))
        else:
            msg = {"version": 1, "id": n_cmd, "cmd": "push", "force": [1.0, 0.0, 0.0],
                   "duration": 0.02}
            seen = lambda s, t0=t_seen: any(d["source"] == "bridge" and d["start"] > t0
                                            for d in s["disturbances"])
        pending = {"id": n_cmd, "cmd": msg["cmd"], "sent_tick": k_seen, "seen": seen}
        dealer.send(msgpack.packb(msg))
for e in effects:
    e["applied_tick"] = replies.get(e["id"])
gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:])) if mode == "latency" else 0
with open(out, "w") as fh:
    json.dump({"latency_ms": lat, "received": len(seqs), "lost": gaps, "effects": effects}, fh)
ctx.destroy(linger=0)
"""


class _Probe:
    """A subscriber process; ``result()`` waits for it to see the stream end."""

    def __init__(self, mode: str, endpoints: dict[str, str], folder: Path) -> None:
        self.out = folder / f"probe-{mode}-{time.monotonic_ns()}.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROBE,
                mode,
                endpoints["state"],
                endpoints["commands"],
                str(self.out),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.proc.stdout.readline()  # type: ignore[union-attr]  # "ready" (or EOF if it died)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def result(self) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            return {"latency_ms": [], "received": 0, "lost": 0, "effects": []}
        return json.loads(self.out.read_text())


def _pct(a: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(a), q)) if len(a) else None


def _max(a: list[float]) -> float | None:
    return float(max(a)) if a else None


# -- the three measurements ----------------------------------------------------------------------
def _latency(config: str, overrides: list[str], duration: float, tmp: Path) -> dict[str, Any]:
    from mpc.bridge.server import BridgeServer
    from mpc.config import load_config
    from mpc.loop import ClosedLoop

    cfg = load_config(
        config,
        [
            *overrides,
            f"run.duration={duration}",
            "mpc.timing=wallclock",
            "bridge.publish_every=1",
            *_PORTS,
        ],
    )
    with ClosedLoop(cfg) as loop, BridgeServer(loop) as server:
        probe = _Probe("latency", server.endpoints, tmp)
        res = loop.run(progress=False)
        server.close()
        r = probe.result()
        bridge = server.summary()
    lat, eff = r["latency_ms"], r["effects"]
    applied = [e["applied_tick"] - e["sent_tick"] for e in eff if e["applied_tick"] is not None]
    visible = [e["visible_tick"] - e["sent_tick"] for e in eff if e["visible_tick"] is not None]
    return {
        "published": bridge["published"],
        "received": r["received"],
        "lost": r["lost"],
        "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99), "max": _max(lat), "n": len(lat)},
        "command_to_effect_ticks": {
            "commands": len(eff),
            "never_seen": len(eff) - len(visible),
            "applied_p50": _pct(applied, 50),
            "applied_max": _max(applied),
            "visible_p50": _pct(visible, 50),
            "visible_max": _max(visible),
        },
        "hook_us": bridge["hook_us"],
        "real_time_factor": res.summary.real_time_factor,
        "deadline_misses": res.summary.deadline_misses,
        "replans": res.summary.replans,
    }


def _publish_rate(
    config: str, overrides: list[str], seconds: float, tmp: Path, conflate: bool
) -> dict[str, Any]:
    """The server's publish path in a tight loop, and what a subscriber that counts gets."""
    from mpc.bridge.server import BridgeServer
    from mpc.config import load_config
    from mpc.loop import ClosedLoop

    cfg = load_config(
        config,
        [*overrides, "run.duration=0.01", *_PORTS, f"bridge.conflate={str(conflate).lower()}"],
    )
    with ClosedLoop(cfg) as loop, BridgeServer(loop) as server:
        probe = _Probe("count", server.endpoints, tmp)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                server._publish(loop, n, n * 1e-3)
                n += 1
        wall = time.perf_counter() - t0
        sent = server.counters.published
        server.close()
        r = probe.result()
    return {
        "sent_per_s": sent / wall,
        "received_per_s": r["received"] / wall,
        "sent": sent,
        "received": r["received"],
        "dropped": server.counters.publish_dropped,
        "conflate": conflate,
    }


def _rtf_run(
    config: str,
    overrides: list[str],
    side: tuple[int, str | None] | None,
    seconds: float,
    tmp: Path,
) -> tuple[float, float, int]:
    """(real-time factor, CPU seconds of this process per sim second, deadline misses)."""
    from mpc.bridge.server import BridgeServer
    from mpc.config import load_config
    from mpc.loop import ClosedLoop

    extra = [] if side is None else [f"bridge.publish_every={side[0]}"]
    cfg = load_config(
        config, [*overrides, "mpc.timing=lockstep", f"run.duration={seconds}", *_PORTS, *extra]
    )
    with ClosedLoop(cfg) as loop:
        if side is None:
            cpu0 = time.process_time()
            res = loop.run(progress=False)
            cpu = time.process_time() - cpu0
        else:
            with BridgeServer(loop) as server:
                probe = _Probe(side[1], server.endpoints, tmp) if side[1] else None
                cpu0 = time.process_time()
                res = loop.run(progress=False)
                cpu = time.process_time() - cpu0
                server.close()
                if probe is not None:
                    probe.stop()
    s = res.summary
    return s.real_time_factor, cpu / (s.sim_steps * cfg.sim.timestep), s.deadline_misses


def _rtf(
    config: str,
    overrides: list[str],
    repeats: int,
    seconds: float,
    tmp: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Bridge off and on, interleaved, order rotated every repeat. Other tenants of a shared
    machine only ever slow a run down, so the best run of each side is the estimate of what the
    bridge itself costs; the median of the per-repeat ratios is reported next to it."""
    names = list(RTF_SIDES)
    rtf: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    misses: dict[str, list[int]] = {k: [] for k in names}
    for rep in range(repeats):
        for side in names[rep % len(names) :] + names[: rep % len(names)]:
            r, c, m = _rtf_run(config, overrides, RTF_SIDES[side], seconds, tmp)
            rtf[side].append(r)
            cpu[side].append(c)
            misses[side].append(m)
        log(
            "  RTF off / on alone / on, watched / on, every message taken: "
            + " / ".join(f"{rtf[k][-1]:.2f}x" for k in names)
        )
    out: dict[str, Any] = {
        "runs": rtf,
        "cpu_s_per_sim_s": cpu,
        "deadline_misses": misses,
        "best": {k: max(v) for k, v in rtf.items()},
        "median": {k: float(np.median(v)) for k, v in rtf.items()},
    }
    for k in names[1:]:
        ratios = [a / b for a, b in zip(rtf[k], rtf["off"], strict=False)]
        out[f"ratio_best_{k}"] = max(rtf[k]) / max(rtf["off"])
        out[f"ratio_median_{k}"] = float(np.median(ratios))
        out[f"cpu_ratio_best_{k}"] = min(cpu["off"]) / min(cpu[k])
    return out


def bench_bridge(
    config: str,
    duration: float = 5.0,
    repeats: int = 8,
    out: Path = Path("runs/bench"),
    overrides: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    goal_p99_ms: float = 1.0,
    goal_rtf_ratio: float = 0.9,
    rtf_seconds: float = 1.0,
) -> BridgeBenchResult:
    """Measure latency, publish rate and the real-time factor with the bridge off and on, write
    ``out/bench_bridge.json`` and return the result. ``log`` gets a line as each stage starts
    and after every RTF repeat (default: nowhere)."""
    say = log or _quiet
    overrides = list(overrides or [])
    load0 = os.getloadavg()[0]  # others' work on a shared machine skews every timing here
    with tempfile.TemporaryDirectory(prefix="vmpc-bench-bridge-") as tmpdir:
        tmp = Path(tmpdir)
        say("bench bridge: latency at 1 kHz (wallclock) ...")
        lat = _latency(config, overrides, duration, tmp)
        say("bench bridge: publish rate ...")
        rate = {
            "conflate_on": _publish_rate(config, overrides, 1.0, tmp, True),
            "conflate_off": _publish_rate(config, overrides, 1.0, tmp, False),
        }
        say("bench bridge: real-time factor, bridge off vs on ...")
        rtf = _rtf(config, overrides, repeats, rtf_seconds, tmp, say)
    load1 = os.getloadavg()[0]
    p99 = lat["latency_ms"]["p99"]
    result = BridgeBenchResult(
        config=config,
        overrides=overrides,
        duration_s=duration,
        repeats=repeats,
        rtf_seconds=rtf_seconds,
        goals=BridgeGoals(
            p99_ms=goal_p99_ms,
            rtf_ratio=goal_rtf_ratio,
            p99_met=p99 is not None and p99 <= goal_p99_ms,
            rtf_met=rtf["ratio_best_on_watch"] >= goal_rtf_ratio,
        ),
        latency=lat,
        publish_rate=rate,
        rtf=rtf,
        machine=BridgeMachine(
            python=platform.python_version(),
            processor=platform.processor(),
            machine=platform.machine(),
            cores=os.cpu_count(),
            load_1min=[load0, load1],
        ),
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        json_path=Path(out) / "bench_bridge.json",
    )
    atomic_write_text(result.json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
