"""``vmpc``: the command line of value-mpc.

Every user error (bad config, missing file, no display, ...) is one line on stderr and exit
code 2; no tracebacks for mistakes a user can fix.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from sim import SimError

from .errors import VmpcError

__all__ = ["main"]

EXIT_USAGE = 2
DEFAULT_CONFIG = "configs/iiwa_reach.yaml"


def _sim_overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "horizon": "ocp.horizon", "dt": "ocp.dt", "duration": "run.duration",
        "replan_every": "mpc.replan_every", "maxiter": "mpc.maxiter",
        "terminal": "ocp.terminal.kind", "seed": "run.seed", "timing": "mpc.timing",
    }
    out = [f"{key}={getattr(args, name)}" for name, key in flags.items()
           if getattr(args, name) is not None]
    return out + list(args.set or [])


def _print_table(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _fmt(x: object, unit: str = "", digits: int = 4) -> str:
    if x is None:
        return "never"
    if isinstance(x, float):
        return f"{x:.{digits}g}{unit}"
    return f"{x}{unit}"


def _start_bridge(loop: object):
    from .bridge.server import BridgeServer

    server = BridgeServer(loop).attach()  # type: ignore[arg-type]
    ep = server.endpoints
    print(f"vmpc: bridge: state {ep['state']}, commands {ep['commands']}, wrench {ep['wrench']}"
          f"{' (CURVE)' if server.spec.curve else ''}", file=sys.stderr, flush=True)
    return server


def cmd_sim(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import ClosedLoop

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
            result.summary["bridge"] = bridge.summary()
        loop.write_outputs(result, out, plots=not args.no_plots)
    s = result.summary
    rows = [
        ("robot / terminal", f"{s['robot']} / {s['terminal']}  (T={s['horizon']}, dt={s['dt']} s)"),
        ("EE error final", _fmt(s["ee_error_final_m"] * 1e3, " mm")),
        ("settle time (5 mm)", _fmt(s["settle_time_s"], " s")),
        ("closed-loop cost", _fmt(s["closed_loop_cost"])),
    ]
    for i, r in enumerate(s["recoveries"]):
        rows.append((f"push {i + 1} @ {r['start_s']:.2f} s",
                     f"peak {_fmt(r['peak_deviation_m'] * 1e3 if r['peak_deviation_m'] is not None else None, ' mm')}, "
                     f"recovered in {_fmt(r['recovery_time_s'], ' s')}"))
    sm = s["solve_ms"]
    rows += [
        ("solve per replan", f"mean {sm['mean']:.3f} ms, p50 {sm['p50']:.3f}, p99 {sm['p99']:.3f}, "
                             f"max {sm['max']:.3f}"),
        ("deadline misses", f"{s['deadline_misses']} of {s['replans']} replans"),
        ("solver failures", str(s["solver_failures"])),
        ("torque saturation", f"{s['torque_saturation_steps']} steps"),
        ("real-time factor", f"{s['real_time_factor']:.2f}x"),
        ("outputs", str(out)),
    ]
    if "bridge" in s:
        b = s["bridge"]
        rows.insert(-1, ("bridge", f"{b['received']} commands: {b['applied']} applied, "
                                   f"{b['refused']} refused, {b['bad']} bad; "
                                   f"{b['published']} states published"))
    if s["interrupted"]:
        rows.insert(0, ("INTERRUPTED", f"stopped at t = {s['sim_steps'] * cfg.sim.timestep:.3f} s"))
    _print_table(rows, "vmpc sim")
    return 0


def cmd_bench_mpc(args: argparse.Namespace) -> int:
    from .bench import bench_mpc

    bench_mpc(args.config, horizons=args.horizons, replans=args.replans, out=Path(args.out),
              overrides=args.set or [], progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmpc",
        description="Model-predictive control with learned terminal values: Crocoddyl FDDP on a "
                    "torque-controlled arm simulated in PyBullet.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "sim", help="run the closed loop and write summary, log and plots",
        description="Run a closed-loop reaching simulation. Writes config.yaml (resolved), "
                    "summary.json, log.npz and PNG plots to --out.",
    )
    s.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    s.add_argument("--horizon", type=int, help="running knots T (ocp.horizon)")
    s.add_argument("--dt", type=float, help="knot spacing [s] (ocp.dt)")
    s.add_argument("--duration", type=float, help="sim time [s] (run.duration)")
    s.add_argument("--replan-every", type=int, help="sim steps between replans (mpc.replan_every)")
    s.add_argument("--maxiter", type=int, help="FDDP iterations per replan (mpc.maxiter)")
    s.add_argument("--terminal", help="none | quadratic | PATH of a value model inside "
                                      "value.allowed_dirs (ocp.terminal.kind)")
    s.add_argument("--timing", choices=["lockstep", "wallclock"], help="mpc.timing")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set ocp.costs.torque_reg=1e-2 "
                        "(repeatable; values are YAML)")
    s.add_argument("--out", help="output folder (default runs/sim-<date>-<time>)")
    s.add_argument("--record", metavar="FILE", help="record a headless .gif (or .mp4)")
    s.add_argument("--gui", action="store_true", help="PyBullet window (needs a display)")
    s.add_argument("--seed", type=int, help="seed for random pushes and noise (run.seed)")
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("--bridge", action="store_true",
                   help="serve the ZeroMQ bridge (state out, commands and wrenches in; see "
                        "`bridge` in the config); implies --timing wallclock unless given")
    s.set_defaults(func=cmd_sim)

    b = sub.add_parser("bench", help="benchmarks that print tables and side-by-side ratios")
    b.set_defaults(func=lambda _args: (b.print_help(), EXIT_USAGE)[1])
    bsub = b.add_subparsers(dest="bench", metavar="BENCH")
    bm = bsub.add_parser(
        "mpc", help="replan time vs raw Crocoddyl for several horizons, and the real-time factor",
        description="For each horizon T, runs the closed loop and, at every replan, times our "
                    "controller's replan and a raw Crocoddyl solve of the same problem from the "
                    "same state, interleaved. Prints a table and writes bench_mpc.json.",
    )
    bm.add_argument("--config", default=DEFAULT_CONFIG)
    bm.add_argument("--horizons", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200])
    bm.add_argument("--replans", type=int, default=500, help="replans timed per horizon")
    bm.add_argument("--set", action="append", metavar="KEY=VALUE")
    bm.add_argument("--out", default="runs/bench", help="folder for bench_mpc.json")
    bm.add_argument("-q", "--quiet", action="store_true")
    bm.set_defaults(func=cmd_bench_mpc)

    from .value_cli import add_value_bench, add_value_commands

    add_value_bench(bsub)
    add_value_commands(sub)
    from .eval_cli import add_eval_commands

    add_eval_commands(sub)

    from .train_cli import add_dvp_bench, add_sobolev_bench, add_train_commands

    add_train_commands(sub)
    add_sobolev_bench(bsub)
    add_dvp_bench(bsub)

    from .bridge.cli import add_bridge_bench, add_bridge_commands

    add_bridge_commands(sub)
    add_bridge_bench(bsub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except (VmpcError, SimError) as exc:
        print(f"vmpc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmpc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
