"""``vmpc bench ...``: benchmarks that measure side by side in one run and print ratios.

mpc (replan time vs raw Crocoddyl), value (cost of the learned terminal), bridge (latency and
real-time factor with the bridge on vs off), sobolev (samples Sobolev regression saves) and dvp
(OCP solves per second per executor). The measurements live in :mod:`vmpc.benches`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import EXIT_OK, add_config, add_group, add_out, add_quiet, add_set

__all__ = ["add_bench_commands"]


def cmd_bench_mpc(args: argparse.Namespace) -> int:
    from vmpc.benches.mpc import bench_mpc

    bench_mpc(
        args.config,
        horizons=args.horizons,
        replans=args.replans,
        out=Path(args.out),
        overrides=args.set or [],
        progress=not args.quiet,
    )
    return EXIT_OK


def cmd_bench_value(args: argparse.Namespace) -> int:
    from vmpc.benches.value import bench_value

    bench_value(
        args.config, args.value, args.horizons, args.iterations, Path(args.out), args.set or []
    )
    return EXIT_OK


def cmd_bench_bridge(args: argparse.Namespace) -> int:
    from vmpc.benches.bridge import bench_bridge

    bench_bridge(
        args.config,
        duration=args.duration,
        repeats=args.repeats,
        out=Path(args.out),
        overrides=args.set or [],
        progress=not args.quiet,
    )
    return EXIT_OK


def cmd_bench_sobolev(args: argparse.Namespace) -> int:
    from learning.dvp import load_dvp_config
    from vmpc.benches.sobolev import bench_sobolev

    cfg = load_dvp_config(args.config, args.set or [])
    bench_sobolev(cfg, args.sizes, args.steps, Path(args.out), progress=not args.quiet)
    return EXIT_OK


def cmd_bench_dvp(args: argparse.Namespace) -> int:
    from learning.dvp import load_dvp_config
    from vmpc.benches.dvp import bench_throughput

    cfg = load_dvp_config(args.config, args.set or [])
    settings = [(kind, w) for kind in args.executors for w in args.workers]
    bench_throughput(cfg, args.samples, settings, Path(args.out))
    return EXIT_OK


def add_bench_commands(sub: Any) -> None:
    _, bsub = add_group(
        sub, "bench", "benchmarks that print tables and side-by-side ratios", "BENCH"
    )

    bm = bsub.add_parser(
        "mpc",
        help="replan time vs raw Crocoddyl for several horizons, and the real-time factor",
        description="For each horizon T, runs the closed loop and, at every replan, times our "
        "controller's replan and a raw Crocoddyl solve of the same problem from the "
        "same state, interleaved. Prints a table and writes bench_mpc.json.",
    )
    add_config(bm)
    bm.add_argument("--horizons", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200])
    bm.add_argument("--replans", type=int, default=500, help="replans timed per horizon")
    add_set(bm)
    add_out(bm, "runs/bench", "folder for bench_mpc.json")
    add_quiet(bm)
    bm.set_defaults(func=cmd_bench_mpc)

    bv = bsub.add_parser(
        "value",
        help="cost of the learned terminal: per-call times and FDDP iteration ratios",
        description="Per-call calc/calcDiff times of the fast float64 path and of TorchScript, "
        "and one FDDP iteration with each against the C++ quadratic terminal, "
        "side by side, for several horizons. Without --value a default-sized "
        "residual network with random weights is timed.",
    )
    add_config(bv)
    bv.add_argument("--value", help="artifact to time (default: random default-sized network)")
    bv.add_argument("--horizons", type=int, nargs="+", default=[5, 10, 20])
    bv.add_argument("--iterations", type=int, default=1000)
    add_set(bv)
    add_out(bv, "runs/bench", "folder for bench_value.json")
    bv.set_defaults(func=cmd_bench_value)

    bb = bsub.add_parser(
        "bridge",
        help="bridge latency, command-to-effect ticks, publish rate, RTF on vs off",
        description="State-message latency (publish -> a subscriber's receive, p50/p99) while "
        "streaming at 1 kHz in wallclock timing; command-to-effect latency in ticks; "
        "maximum sustained publish rate; and the real-time factor of the lockstep "
        "loop with the bridge on vs off, run side by side. Prints a table and writes "
        "bench_bridge.json.",
    )
    add_config(bb)
    bb.add_argument(
        "--duration", type=float, default=5.0, help="sim seconds of the latency run (default 5)"
    )
    bb.add_argument(
        "--repeats", type=int, default=8, help="interleaved 1 s RTF runs per side (default 8)"
    )
    add_set(bb)
    add_out(bb, "runs/bench", "folder for bench_bridge.json")
    add_quiet(bb)
    bb.set_defaults(func=cmd_bench_bridge)

    bs = bsub.add_parser(
        "sobolev",
        help="samples Sobolev regression needs vs plain regression",
        description="Fits the value of a DVP config's system on growing sets of ground-truth "
        "samples, with and without the gradient term, at equal gradient steps, and "
        "reports the held-out value error of each and the sample ratio.",
    )
    add_config(bs, None, "a DVP config, e.g. configs/dvp_pendulum.yaml")
    bs.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800, 1600, 3200])
    bs.add_argument("--steps", type=int, default=1500, help="gradient steps per fit")
    add_set(bs)
    add_out(bs, "runs/bench", "folder for bench_sobolev.json")
    add_quiet(bs)
    bs.set_defaults(func=cmd_bench_sobolev)

    bd = bsub.add_parser(
        "dvp",
        help="DVP data generation: OCP solves per second per executor and worker count",
        description="Solves the same sampled problems of a DVP config on each executor and "
        "worker count (after a warm-up), and prints OCP/s and the speed-up over one "
        "worker.",
    )
    add_config(bd, None, "a DVP config, e.g. configs/dvp_pendulum.yaml")
    bd.add_argument("--samples", type=int, default=200)
    bd.add_argument("--executors", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    bd.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_set(bd)
    add_out(bd, "runs/bench", "folder for bench_dvp.json")
    bd.set_defaults(func=cmd_bench_dvp)
