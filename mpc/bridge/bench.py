"""``vmpc bench bridge``: what the bridge costs and how fast it answers, measured on loopback.

1. Latency: a wallclock run (paced to real time) publishes every tick (1 kHz); a subscriber in
   another process stamps each state message on receipt against the ``wall_time`` the server
   put in it just before sending. The same process sends a command every 0.2 s (alternately
   ``set_target`` and a 1 N ``push``) and counts the ticks from the newest state it had seen
   when sending to the tick the server applied it at, and to the first state that shows it.
2. Publish rate: the server's publish path in a tight loop for a second, with a subscriber.
3. Real-time factor: lockstep runs (as fast as possible) with the bridge off and on, interleaved
   so both sides see the same machine, with a subscriber draining the stream when it is on.

Subscribers run in separate processes so they never compete with the loop for the GIL.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..run_log import atomic_write_text

__all__ = ["bench_bridge"]

_PORTS = ["bridge.state_port=0", "bridge.command_port=0", "bridge.wrench_port=0"]
_IDLE_S = 1.5  # a probe stops once the stream has been quiet this long


# -- the probe: a subscriber (and command sender) in its own process -----------------------------
def _probe() -> None:
    """Entry point of the probe process: ``mode state_ep cmd_ep out.json [cmd_period_s]``."""
    import zmq

    from .messages import decode, encode, parse_state

    mode, state_ep, cmd_ep, out = sys.argv[1:5]
    cmd_period = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger, sub.rcvhwm = 0, 1_000_000
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(state_ep)
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(cmd_ep)
    time.sleep(0.2)  # let the subscription reach the publisher before the loop starts
    print("ready", flush=True)
    lat_ms: list[float] = []
    seqs: list[int] = []
    effects: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    replies: dict[int, int] = {}
    n_cmd, last_cmd, last_msg, t_first = 0, 0.0, None, None
    latest: dict[str, Any] | None = None
    started = time.monotonic()
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(dealer, zmq.POLLIN)
    while True:
        ready = dict(poller.poll(100))
        now = time.monotonic()
        if dealer in ready:
            r = decode(dealer.recv(), 1 << 20)
            if r.get("ok"):
                replies[r["id"]] = r["tick"]
        if sub in ready:
            for _ in range(10000):
                try:
                    frame = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                recv_wall = time.time()
                last_msg = now
                t_first = t_first or now
                if mode == "drain":  # a subscriber that costs the machine as little as it can
                    seqs.append(0)
                    continue
                s = parse_state(frame)
                if mode == "rate":
                    seqs.append(s["seq"])
                    continue
                lat_ms.append((recv_wall - s["wall_time"]) * 1e3)
                seqs.append(s["seq"])
                latest = s
                if pending is not None and pending["seen"](s):
                    pending["visible_tick"] = s["tick"]
                    effects.append({k: v for k, v in pending.items() if k != "seen"})
                    pending = None
        if last_msg is not None and now - last_msg > _IDLE_S or now - started > 60:
            break  # the run is over, or it never started (the parent reports no data)
        if mode == "latency" and latest is not None and pending is None \
                and now - t_first > 0.5 and now - last_cmd > cmd_period:
            n_cmd += 1
            last_cmd = now
            k_seen, t_seen = latest["tick"], latest["t"]
            if n_cmd % 2:
                target = [0.4, 0.4, 0.6] if n_cmd % 4 == 1 else [0.4, 0.35, 0.6]
                msg = {"version": 1, "id": n_cmd, "cmd": "set_target", "target": target}

                def seen(s: dict[str, Any], target: list[float] = target) -> bool:
                    return bool(np.allclose(s["target"], target))
            else:
                msg = {"version": 1, "id": n_cmd, "cmd": "push", "force": [1.0, 0.0, 0.0],
                       "duration": 0.005}

                def seen(s: dict[str, Any], t_seen: float = t_seen) -> bool:
                    return any(d["source"] == "bridge" and d["start"] > t_seen
                               for d in s["disturbances"])
            pending = {"id": n_cmd, "cmd": msg["cmd"], "sent_tick": k_seen, "seen": seen}
            dealer.send(encode(msg))
    for e in effects:
        e["applied_tick"] = replies.get(e["id"])
    gaps = int(np.sum(np.diff(seqs) - 1)) if len(seqs) > 1 and mode != "drain" else 0
    span = (last_msg - t_first) if (last_msg and t_first) else 0.0
    Path(out).write_text(json.dumps({"latency_ms": lat_ms, "received": len(seqs), "lost": gaps,
                                     "span_s": span, "effects": effects}))
    ctx.destroy(linger=0)


class _Probe:
    def __init__(self, mode: str, state_ep: str, cmd_ep: str, folder: Path) -> None:
        self.out = folder / f"probe-{mode}-{time.monotonic_ns()}.json"
        code = "from mpc.bridge.bench import _probe; _probe()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, mode, state_ep, cmd_ep,
                                      str(self.out)], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "ready" or time.monotonic() > deadline:
                break

    def result(self) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=_IDLE_S + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            return {"latency_ms": [], "received": 0, "lost": 0, "span_s": 0.0, "effects": []}
        return json.loads(self.out.read_text())


def _pct(a: list[float] | np.ndarray, q: float) -> float | None:
    return float(np.percentile(np.asarray(a), q)) if len(a) else None


# -- the three measurements ----------------------------------------------------------------------
def _latency(config: str, overrides: list[str], duration: float, tmp: Path) -> dict[str, Any]:
    from ..config import load_config
    from ..runner import ClosedLoop
    from .server import BridgeServer

    cfg = load_config(config, [*overrides, f"run.duration={duration}", "mpc.timing=wallclock",
                               "bridge.publish_every=1", *_PORTS])
    with ClosedLoop(cfg) as loop, BridgeServer(loop) as server:
        probe = _Probe("latency", server.endpoints["state"], server.endpoints["commands"], tmp)
        res = loop.run(progress=False)
        server.close()
        r = probe.result()
        bridge = server.summary()
    lat = r["latency_ms"]
    eff = r["effects"]
    applied = [e["applied_tick"] - e["sent_tick"] for e in eff if e.get("applied_tick") is not None]
    visible = [e["visible_tick"] - e["sent_tick"] for e in eff]
    return {
        "published": bridge["published"], "received": r["received"], "lost": r["lost"],
        "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99), "max": max(lat) if lat else None,
                       "n": len(lat)},
        "command_to_effect_ticks": {
            "commands": len(eff),
            "applied_p50": _pct(applied, 50), "applied_max": max(applied) if applied else None,
            "visible_p50": _pct(visible, 50), "visible_max": max(visible) if visible else None,
        },
        "hook_us": bridge["hook_us"],
        "real_time_factor": res.summary["real_time_factor"],
        "deadline_misses": res.summary["deadline_misses"], "replans": res.summary["replans"],
    }


def _publish_rate(config: str, overrides: list[str], seconds: float, tmp: Path) -> dict[str, Any]:
    from ..config import load_config
    from ..runner import ClosedLoop
    from .server import BridgeServer

    cfg = load_config(config, [*overrides, "run.duration=0.01", *_PORTS])
    with ClosedLoop(cfg) as loop, BridgeServer(loop) as server:
        probe = _Probe("rate", server.endpoints["state"], server.endpoints["commands"], tmp)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                server._publish(loop, n, n * 1e-3)
                n += 1
        wall = time.perf_counter() - t0
        sent = server.counters.published
        server.close()
        r = probe.result()
    return {"sent_per_s": sent / wall, "received_per_s": r["received"] / wall,
            "received": r["received"], "sent": sent, "conflate": cfg.bridge.conflate}


def _rtf_run(config: str, overrides: list[str], every: int | None, seconds: float, tmp: Path
             ) -> tuple[float, float, int]:
    """(real-time factor, CPU seconds of this process per sim second, deadline misses)."""
    from ..config import load_config
    from ..runner import ClosedLoop
    from .server import BridgeServer

    extra = [] if every is None else [f"bridge.publish_every={every}"]
    cfg = load_config(config, [*overrides, "mpc.timing=lockstep", f"run.duration={seconds}",
                               *_PORTS, *extra])
    with ClosedLoop(cfg) as loop:
        if every is None:
            cpu0 = time.process_time()
            res = loop.run(progress=False)
            cpu = time.process_time() - cpu0
        else:
            with BridgeServer(loop) as server:
                probe = _Probe("drain", server.endpoints["state"], server.endpoints["commands"],
                               tmp)
                cpu0 = time.process_time()
                res = loop.run(progress=False)
                cpu = time.process_time() - cpu0
                server.close()
                probe.result()
    s = res.summary
    return s["real_time_factor"], cpu / (s["sim_steps"] * cfg.sim.timestep), s["deadline_misses"]


def _rtf(config: str, overrides: list[str], repeats: int, tmp: Path, progress: bool
         ) -> dict[str, Any]:
    """Bridge off and on, interleaved, the order rotated every repeat, so that the drift of a
    shared machine hits every side alike; ratios are taken within a repeat, then the median."""
    sides: dict[str, int | None] = {"off": None, "on_every_2": 2, "on_every_1": 1}
    rtf: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    misses: dict[str, list[int]] = {k: [] for k in sides}
    names = list(sides)
    for rep in range(repeats):
        order = names[rep % 3:] + names[: rep % 3]
        for side in order:
            r, c, m = _rtf_run(config, overrides, sides[side], 2.0, tmp)
            rtf[side].append(r)
            cpu[side].append(c)
            misses[side].append(m)
        if progress:
            print("  RTF off / on every 2 / on every 1: "
                  + " / ".join(f"{rtf[k][-1]:.2f}x" for k in names), file=sys.stderr)
    ratio = {k: [rtf[k][i] / rtf["off"][i] for i in range(repeats)] for k in names[1:]}
    cpu_ratio = {k: [cpu["off"][i] / cpu[k][i] for i in range(repeats)] for k in names[1:]}
    return {"runs": rtf, "cpu_s_per_sim_s": cpu, "deadline_misses": misses,
            "median": {k: float(np.median(v)) for k, v in rtf.items()},
            "ratio_every_2": float(np.median(ratio["on_every_2"])),
            "ratio_every_1": float(np.median(ratio["on_every_1"])),
            "cpu_ratio_every_2": float(np.median(cpu_ratio["on_every_2"])),
            "cpu_ratio_every_1": float(np.median(cpu_ratio["on_every_1"]))}


def bench_bridge(config: str, duration: float = 5.0, repeats: int = 5,
                 out: Path = Path("runs/bench"),
                 overrides: list[str] | None = None, progress: bool = True,
                 goal_p99_ms: float = 1.0, goal_rtf_ratio: float = 0.9) -> dict[str, Any]:
    overrides = list(overrides or [])
    with tempfile.TemporaryDirectory(prefix="vmpc-bench-bridge-") as tmpdir:
        tmp = Path(tmpdir)
        if progress:
            print("bench bridge: latency at 1 kHz (wallclock) ...", file=sys.stderr)
        lat = _latency(config, overrides, duration, tmp)
        if progress:
            print("bench bridge: publish rate ...", file=sys.stderr)
        rate = _publish_rate(config, overrides, 1.0, tmp)
        if progress:
            print("bench bridge: real-time factor, bridge off vs on ...", file=sys.stderr)
        rtf = _rtf(config, overrides, repeats, tmp, progress)

    L, C, H = lat["latency_ms"], lat["command_to_effect_ticks"], lat["hook_us"]
    f = lambda x, d=3: "n/a" if x is None else f"{x:.{d}f}"  # noqa: E731
    rows = [
        ("state latency, publish -> receive", f"p50 {f(L['p50'])} ms, p99 {f(L['p99'])} ms, "
                                              f"max {f(L['max'])} ms ({L['n']} msgs at 1 kHz)"),
        ("messages lost", f"{lat['lost']} of {lat['published']} (subscriber not conflating)"),
        ("command -> applied", f"p50 {f(C['applied_p50'], 1)} ticks, max "
                               f"{f(C['applied_max'], 0)} ({C['commands']} commands)"),
        ("command -> visible in stream", f"p50 {f(C['visible_p50'], 1)} ticks, max "
                                         f"{f(C['visible_max'], 0)}"),
        ("bridge work per tick", f"p50 {f(H['p50'], 1)} us, p99 {f(H['p99'], 1)} us, max "
                                 f"{f(H['max'], 1)} us"),
        ("max publish rate", f"{rate['sent_per_s']:,.0f} msg/s sent, "
                             f"{rate['received_per_s']:,.0f} msg/s received "
                             f"(conflate {'on' if rate['conflate'] else 'off'})"),
        ("RTF lockstep, bridge off", f"{rtf['median']['off']:.2f}x"),
        ("RTF, bridge on (every 2 ticks)", f"{rtf['median']['on_every_2']:.2f}x, ratio "
                                           f"{rtf['ratio_every_2']:.3f} (CPU time "
                                           f"{rtf['cpu_ratio_every_2']:.3f})"),
        ("RTF, bridge on (every tick)", f"{rtf['median']['on_every_1']:.2f}x, ratio "
                                        f"{rtf['ratio_every_1']:.3f} (CPU time "
                                        f"{rtf['cpu_ratio_every_1']:.3f})"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"vmpc bench bridge: {config}, loopback, {repeats} RTF runs per side (median)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    p99_ok = L["p99"] is not None and L["p99"] <= goal_p99_ms
    rtf_ok = min(rtf["ratio_every_2"], rtf["ratio_every_1"]) >= goal_rtf_ratio
    print(f"p99 latency {'meets' if p99_ok else 'MISSES'} the goal of <= {goal_p99_ms:g} ms; "
          f"RTF ratio {'meets' if rtf_ok else 'MISSES'} the goal of >= {goal_rtf_ratio:g}x")
    result = {
        "config": config, "duration_s": duration, "repeats": repeats,
        "goals": {"p99_ms": goal_p99_ms, "rtf_ratio": goal_rtf_ratio,
                  "p99_met": p99_ok, "rtf_met": rtf_ok},
        "latency": lat, "publish_rate": rate, "rtf": rtf,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "machine": platform.machine()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = Path(out)
    atomic_write_text(out / "bench_bridge.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'bench_bridge.json'}")
    return result
