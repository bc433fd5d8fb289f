"""The bridge's client verbs: watch, perturb, target, swap, status, stream-wrench. Each talks to
a running ``vmpc sim --bridge`` and exits non-zero with one line when the server does not answer
within ``--timeout``."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

from mpc.bridge.client import DEFAULT_ADDRESS, BridgeClient
from mpc.bridge.keys import ClientKeys

from .common import EXIT_OK, UsageError

__all__ = ["add_bridge_commands", "wrench_profile"]


def _client_options(p: argparse.ArgumentParser, timeout: float = 2.0) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"command endpoint of the bridge (default {DEFAULT_ADDRESS})",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        help=f"seconds to wait for the server (default {timeout:g})",
    )
    g.add_argument(
        "--client-key", metavar="FILE.key_secret", help="CURVE: this client's secret certificate"
    )
    g.add_argument(
        "--server-key", metavar="FILE.key", help="CURVE: the server's public certificate"
    )


def _client(args: argparse.Namespace) -> BridgeClient:
    if args.timeout <= 0 or not math.isfinite(args.timeout):
        raise UsageError("--timeout must be a positive number of seconds")
    keys = None
    if args.client_key or args.server_key:
        if not (args.client_key and args.server_key):
            raise UsageError("CURVE needs both --client-key and --server-key")
        keys = ClientKeys.load(args.client_key, args.server_key)
    return BridgeClient(args.address, keys, timeout_s=args.timeout)


def _vec(values: list[float], flag: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag}: every component must be a finite number")
    return values


def _opt_vec(values: list[float] | None, flag: str) -> list[float] | None:
    return None if values is None else _vec(values, flag)


def _v3(x: list[float]) -> str:
    return "[" + ", ".join(f"{v:+.3f}" for v in x) + "]"


# -- verbs ---------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        st = c.status()
    cnt = st["counters"]
    rows = [
        (
            "sim time",
            f"{st['sim_time']:.3f} s (tick {st['sim_tick']}), {st['timing']}"
            f"{', PAUSED' if st['paused'] else ''}",
        ),
        ("robot", f"{st['robot']}, EE link {st['ee_link']}"),
        (
            "terminal",
            f"{st['terminal']} (configured: {st['configured_terminal']}"
            f"{', a swap pending' if st['swaps_pending'] else ''})",
        ),
        ("target", _v3(st["target"]) + " m"),
        ("workspace", f"{_v3(st['workspace']['min'])} .. {_v3(st['workspace']['max'])} m"),
        (
            "state stream",
            f"{st['endpoints']['state']} topic '{st['topic']}', every "
            f"{st['publish_every']} tick(s)",
        ),
        ("wrench stream", st["endpoints"]["wrench"]),
        (
            "commands",
            f"{cnt['received']} received, {cnt['applied']} applied, {cnt['refused']} "
            f"refused ({cnt['rate_limited']} over the rate), {cnt['bad']} bad",
        ),
        (
            "wrench samples",
            f"{cnt['wrench_received']} received, {cnt['wrench_applied']} applied, "
            f"{cnt['wrench_refused']} refused, {cnt['wrench_bad']} bad, "
            f"{cnt['wrench_stale']} went stale",
        ),
        ("encryption", "CURVE" if st["curve"] else "none (plaintext)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"vmpc status ({args.address})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return EXIT_OK


def cmd_perturb(args: argparse.Namespace) -> int:
    if not (args.duration > 0 and math.isfinite(args.duration)):
        raise UsageError("--duration must be a positive number of seconds")
    with _client(args) as c:
        r = c.push(
            _vec(args.force, "--force"), _opt_vec(args.torque, "--torque"), args.duration, args.link
        )
    print(
        f"push {_v3(args.force)} N on {r['link']} from t = {r['t']:.3f} s to {r['end']:.3f} s "
        f"(tick {r['tick']})"
    )
    return EXIT_OK


def cmd_target(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.set_target(_vec(args.xyz, "target"))
    print(f"target {_v3(r['target'])} m from t = {r['t']:.3f} s (tick {r['tick']})")
    return EXIT_OK


def cmd_swap(args: argparse.Namespace) -> int:
    if (args.path is None) == (not args.clear):
        raise UsageError("give either a PATH ('none', 'quadratic' or a value model) or --clear")
    with _client(args) as c:
        r = (
            c.clear_value(args.timeout)
            if args.clear
            else c.swap_value(args.path, args.force, args.timeout)
        )
    note = f"  ({r['note']})" if r.get("note") else ""
    print(
        f"terminal is now {r['terminal']} [{r['model_id']}] since t = {r['applied_t']:.3f} s{note}"
    )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Reads the newest state ``--rate`` times a second and sleeps in between: a watcher costs
    the machine (and so the loop) next to nothing, whatever the publish rate."""
    if not (args.rate > 0 and math.isfinite(args.rate)):
        raise UsageError("--rate must be a positive number of lines per second")
    tty = sys.stdout.isatty()
    lines = 0
    wall0 = time.monotonic()
    with _client(args) as c:
        prev: tuple[float, int, float] | None = None  # (wall [s], seq, sim t [s])
        try:
            for s in c.states(latest=True, timeout_s=args.timeout):
                now = time.monotonic()
                rate = rtf = 0.0
                if prev is not None and now > prev[0]:
                    rate = (s["seq"] - prev[1]) / (now - prev[0])
                    rtf = (s["t"] - prev[2]) / (now - prev[0])
                prev = (now, s["seq"], s["t"])
                err = math.dist(s["ee"], s["target"]) * 1e3
                age = (time.time() - s["wall_time"]) * 1e3
                extra = f"  push x{len(s['disturbances'])}" if s["disturbances"] else ""
                if s["stream"]:
                    extra += f"  stream {math.hypot(*s['stream']['force']):.1f} N"
                line = (
                    f"t {s['t']:8.3f} s  ee {_v3(s['ee'])} m  err {err:7.2f} mm  "
                    f"solve {s['solve_ms']:.3f} ms {s['solve_status']}  {s['terminal']}  "
                    f"{'PAUSED  ' if s['paused'] else ''}{rate:5.0f} msg/s  "
                    f"x{rtf:.2f} real time  age {age:.2f} ms{extra}"
                )
                print(
                    ("\r" + line + "\033[K") if tty else line, end="" if tty else "\n", flush=True
                )
                lines += 1
                if args.count and lines >= args.count:
                    break
                if args.duration and now - wall0 >= args.duration:
                    break
                time.sleep(1.0 / args.rate)
        except KeyboardInterrupt:
            pass
    if tty:
        print()
    return EXIT_OK


def wrench_profile(
    kind: str,
    t: float,
    amplitude: float,
    frequency: float,
    direction: np.ndarray,
    period: float,
    width: float,
    noise: np.ndarray,
) -> np.ndarray:
    """Force [N] of the example profiles at time ``t`` [s] since the start."""
    if kind == "sine":
        return amplitude * math.sin(2 * math.pi * frequency * t) * direction
    if kind == "impulse":
        return amplitude * direction if (t % period) < width else 0.0 * direction
    return amplitude * noise  # "noise": the caller's low-pass-filtered Gaussian


def cmd_stream_wrench(args: argparse.Namespace) -> int:
    direction = np.asarray(_vec(args.direction, "--direction"), float)
    norm = float(np.linalg.norm(direction))
    if norm == 0:
        raise UsageError("--direction must not be zero")
    direction /= norm
    for flag in ("rate", "duration", "frequency", "period", "width"):
        v = getattr(args, flag)
        if not (v > 0 and math.isfinite(v)):
            raise UsageError(f"--{flag} must be a positive number")
    if not math.isfinite(args.amplitude):
        raise UsageError("--amplitude must be a finite number of newtons")
    rng = np.random.default_rng(args.seed)
    dt = 1.0 / args.rate
    alpha = 1.0 - math.exp(-2 * math.pi * args.frequency * dt)  # first-order low-pass
    noise = np.zeros(3)
    n = 0
    with _client(args) as c:
        c.status()  # fails fast, with a clear message, if nobody answers
        t0 = time.monotonic()
        try:
            while True:
                t = n * dt
                if t >= args.duration:
                    break
                noise += alpha * (rng.normal(size=3) - noise)
                f = wrench_profile(
                    args.profile,
                    t,
                    args.amplitude,
                    args.frequency,
                    direction,
                    args.period,
                    args.width,
                    noise,
                )
                c.send_wrench(f.tolist(), link=args.link)
                n += 1
                ahead = t0 + n * dt - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except KeyboardInterrupt:
            pass
        wall = time.monotonic() - t0
    print(
        f"streamed {n} {args.profile} samples in {wall:.2f} s ({n / max(wall, 1e-9):.0f} Hz); "
        f"the server zeroes the wrench once samples stop"
    )
    return EXIT_OK


# -- registration --------------------------------------------------------------------------------
def add_bridge_commands(sub: Any) -> None:
    """Register the client verbs on the top-level subparsers."""
    w = sub.add_parser(
        "watch",
        help="a live line of the bridge's state stream, with rates",
        description="Subscribe to the state stream of a running `vmpc sim "
        "--bridge` (newest state only) and print a line of it.",
    )
    w.add_argument("--rate", type=float, default=10.0, help="lines per second (default 10)")
    w.add_argument("--count", type=int, default=0, help="stop after N lines (default: Ctrl-C)")
    w.add_argument("--duration", type=float, default=0.0, help="stop after S seconds")
    _client_options(w)
    w.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "perturb",
        help="push the running arm through the bridge",
        description="A constant wrench (world frame) on a link for a duration, "
        "applied at the next control tick.",
    )
    p.add_argument(
        "--force",
        type=float,
        nargs=3,
        required=True,
        metavar=("FX", "FY", "FZ"),
        help="[N] world frame",
    )
    p.add_argument(
        "--torque",
        type=float,
        nargs=3,
        metavar=("TX", "TY", "TZ"),
        help="[N m] world frame (default 0)",
    )
    p.add_argument("--duration", type=float, required=True, help="[s] of sim time")
    p.add_argument("--link", help="link name (default the EE link; `vmpc status` lists them)")
    _client_options(p)
    p.set_defaults(func=cmd_perturb)

    t = sub.add_parser(
        "target",
        help="move the EE target of the running loop",
        description="Set the EE target [m, world]; it must lie in task.workspace.",
    )
    # A tuple metavar on a positional crashes argparse's usage line (Python 3.11): one name.
    t.add_argument("xyz", type=float, nargs=3, metavar="XYZ", help="target x y z [m, world]")
    _client_options(t)
    t.set_defaults(func=cmd_target)

    s = sub.add_parser(
        "swap",
        help="swap the terminal value of the running loop",
        description="Swap the terminal to 'none', 'quadratic' or a value-model "
        "file inside value.allowed_dirs; it is validated off the "
        "control path and the reply comes once it is live or refused.",
    )
    s.add_argument("path", nargs="?", help="none | quadratic | a value-model path")
    s.add_argument("--clear", action="store_true", help="back to the configured terminal")
    s.add_argument("--force", action="store_true", help="accept a task-fingerprint mismatch")
    _client_options(s, timeout=30.0)
    s.set_defaults(func=cmd_swap)

    st = sub.add_parser("status", help="state, endpoints and counters of a running bridge")
    _client_options(st)
    st.set_defaults(func=cmd_status)

    sw = sub.add_parser(
        "stream-wrench",
        help="stream an example external wrench into the loop",
        description="Send wrench samples at --rate: a sine, periodic impulses, "
        "or low-pass-filtered noise. When the stream stops, the "
        "server zeroes the wrench after bridge.stale_after_s.",
    )
    sw.add_argument("--profile", choices=["sine", "impulse", "noise"], default="sine")
    sw.add_argument("--amplitude", type=float, default=20.0, help="[N] (default 20)")
    sw.add_argument(
        "--direction",
        type=float,
        nargs=3,
        default=[1.0, 0.0, 0.0],
        metavar=("DX", "DY", "DZ"),
        help="force direction, world (default x)",
    )
    sw.add_argument(
        "--frequency",
        type=float,
        default=1.0,
        help="sine frequency / noise bandwidth [Hz] (default 1)",
    )
    sw.add_argument("--period", type=float, default=1.0, help="impulse period [s] (default 1)")
    sw.add_argument("--width", type=float, default=0.05, help="impulse width [s] (default 0.05)")
    sw.add_argument("--rate", type=float, default=1000.0, help="samples per second (default 1000)")
    sw.add_argument("--duration", type=float, default=5.0, help="[s] of wall time (default 5)")
    sw.add_argument("--link", help="link name (default the EE link)")
    sw.add_argument("--seed", type=int, default=0, help="seed of the noise profile")
    _client_options(sw)
    sw.set_defaults(func=cmd_stream_wrench)
