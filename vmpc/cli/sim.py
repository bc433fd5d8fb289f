"""``vmpc sim``: run the closed loop, write its outputs and print the summary table."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EXIT_OK, add_config, add_out, add_quiet, add_set, fmt, print_table

if TYPE_CHECKING:  # the robotics stack is imported by the verbs that need it, when they run
    from mpc.bridge.server import BridgeServer
    from mpc.loop import ClosedLoop

__all__ = ["add_sim_commands", "cmd_sim"]


def _sim_overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "horizon": "ocp.horizon",
        "dt": "ocp.dt",
        "duration": "run.duration",
        "replan_every": "mpc.replan_every",
        "maxiter": "mpc.maxiter",
        "terminal": "ocp.terminal.kind",
        "seed": "run.seed",
        "timing": "mpc.timing",
    }
    out = [
        f"{key}={getattr(args, name)}"
        for name, key in flags.items()
        if getattr(args, name) is not None
    ]
    return out + list(args.set or [])


def _start_bridge(loop: ClosedLoop) -> BridgeServer:
    from mpc.bridge.server import BridgeServer

    server = BridgeServer(loop).attach()
    loop.warm_swaps()  # any client may ask for a swap: start its worker before one does
    ep = server.endpoints
    print(
        f"vmpc: bridge: state {ep['state']}, commands {ep['commands']}, wrench {ep['wrench']}"
        f"{' (CURVE)' if server.spec.curve else ''}",
        file=sys.stderr,
        flush=True,
    )
    return server


def cmd_sim(args: argparse.Namespace) -> int:
    from mpc.config import load_config
    from mpc.loop import ClosedLoop

    overrides = _sim_overrides(args)
    if args.bridge and args.timing is None:
        overrides.insert(0, "mpc.timing=wallclock")  # people interact with it: real time
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("sim-%Y%m%d-%H%M%S")
    with ClosedLoop(cfg, gui=args.gui, record=Path(args.record) if args.record else None) as loop:
        # Ctrl-C or SIGTERM ends the run at the next tick; what ran so far is still written.
        def stop(signum: int, _frame: object) -> None:
            loop.stop_requested = True

        bridge = _start_bridge(loop) if args.bridge else None
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            result = loop.run(progress=not args.quiet)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bridge is not None:
                bridge.close()
        if bridge is not None:
            result.summary.bridge = bridge.summary()
        loop.write_outputs(result, out, plots=not args.no_plots)
    s = result.summary
    final_mm = s.ee_error_final_m * 1e3 if s.ee_error_final_m is not None else None
    rows = [
        ("robot / terminal", f"{s.robot} / {s.terminal}  (T={s.horizon}, dt={s.dt} s)"),
        ("EE error final", fmt(final_mm, " mm")),
        ("settle time (5 mm)", fmt(s.settle_time_s, " s")),
        ("closed-loop cost", fmt(s.closed_loop_cost)),
    ]
    for i, r in enumerate(s.recoveries):
        peak_mm = r.peak_deviation_m * 1e3 if r.peak_deviation_m is not None else None
        rows.append(
            (
                f"push {i + 1} @ {r.start_s:.2f} s",
                f"peak {fmt(peak_mm, ' mm')}, recovered in {fmt(r.recovery_time_s, ' s')}",
            )
        )
    sm = s.solve_ms
    rows += [
        (
            "solve per replan",
            f"mean {sm.mean:.3f} ms, p50 {sm.p50:.3f}, p99 {sm.p99:.3f}, max {sm.max:.3f}",
        ),
        ("deadline misses", f"{s.deadline_misses} of {s.replans} replans"),
        ("solver failures", str(s.solver_failures)),
        ("torque saturation", f"{s.torque_saturation_steps} steps"),
        ("real-time factor", f"{s.real_time_factor:.2f}x"),
        ("outputs", str(out)),
    ]
    if s.bridge is not None:
        b = s.bridge
        rows.insert(
            -1,
            (
                "bridge",
                f"{b['received']} commands: {b['applied']} applied, "
                f"{b['refused']} refused, {b['bad']} bad; "
                f"{b['published']} states published",
            ),
        )
    if s.interrupted:
        rows.insert(0, ("INTERRUPTED", f"stopped at t = {s.sim_steps * cfg.sim.timestep:.3f} s"))
    print_table(rows, "vmpc sim")
    return EXIT_OK


def add_sim_commands(sub: Any) -> None:
    s = sub.add_parser(
        "sim",
        help="run the closed loop and write summary, log and plots",
        description="Run a closed-loop reaching simulation. Writes config.yaml (resolved), "
        "summary.json, log.npz and PNG plots to --out.",
    )
    add_config(s)
    s.add_argument("--horizon", type=int, help="running knots T (ocp.horizon)")
    s.add_argument("--dt", type=float, help="knot spacing [s] (ocp.dt)")
    s.add_argument("--duration", type=float, help="sim time [s] (run.duration)")
    s.add_argument("--replan-every", type=int, help="sim steps between replans (mpc.replan_every)")
    s.add_argument("--maxiter", type=int, help="FDDP iterations per replan (mpc.maxiter)")
    s.add_argument(
        "--terminal",
        help="none | quadratic | PATH of a value model inside "
        "value.allowed_dirs (ocp.terminal.kind)",
    )
    s.add_argument("--timing", choices=["lockstep", "wallclock"], help="mpc.timing")
    add_set(s)
    add_out(s, None, "output folder (default runs/sim-<date>-<time>)")
    s.add_argument("--record", metavar="FILE", help="record a headless .gif (or .mp4)")
    s.add_argument("--gui", action="store_true", help="PyBullet window (needs a display)")
    s.add_argument("--seed", type=int, help="seed for random pushes and noise (run.seed)")
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_quiet(s)
    s.add_argument(
        "--bridge",
        action="store_true",
        help="serve the ZeroMQ bridge (state out, commands and wrenches in; see "
        "`bridge` in the config); implies --timing wallclock unless given",
    )
    s.set_defaults(func=cmd_sim)
