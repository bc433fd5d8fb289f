"""``vmpc bench ...``: benchmarks that measure side by side in one run and print ratios.

mpc (replan time vs raw Crocoddyl), value (cost of the learned terminal), bridge (latency and
real-time factor with the bridge on vs off), sobolev (samples Sobolev regression saves) and dvp
(OCP solves per second per executor). The measurements live in :mod:`vmpc.benches`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EXIT_OK, add_config, add_group, add_out, add_quiet, add_set

if TYPE_CHECKING:
    from vmpc.benches.bridge import BridgeBenchResult
    from vmpc.benches.dvp import ThroughputResult
    from vmpc.benches.mpc import MpcBenchResult
    from vmpc.benches.sobolev import SobolevBenchResult
    from vmpc.benches.swap import SwapBenchResult
    from vmpc.benches.value import ValueBenchResult

__all__ = [
    "add_bench_commands",
    "format_bridge",
    "format_dvp",
    "format_mpc",
    "format_sobolev",
    "format_swap",
    "format_value",
]


# -- tables: what each verb prints -----------------------------------------------------------
def format_mpc(result: MpcBenchResult) -> list[str]:
    """The ``vmpc bench mpc`` table: replan times per horizon, ratios, RTF and the verdict."""
    lines = [
        f"vmpc bench mpc: 1 warm-started FDDP iteration per replan, dt {result.dt} s, "
        f"nthreads {result.nthreads}, {result.replans} replans per T, replan every "
        f"{result.replan_every} sim step(s)",
        f"{'T':>5} {'ours p50':>10} {'raw p50':>10} {'ratio':>7} {'ours p99':>10} "
        f"{'raw p99':>10} {'ratio':>7} {'RTF':>7}",
    ]
    for r in result.rows:
        lines.append(
            f"{r.horizon:>5} {r.ours_ms_p50:>8.3f}ms {r.raw_ms_p50:>8.3f}ms "
            f"{r.ratio_p50:>6.2f}x {r.ours_ms_p99:>8.3f}ms {r.raw_ms_p99:>8.3f}ms "
            f"{r.ratio_p99:>6.2f}x {r.real_time_factor:>6.2f}x"
        )
    verdict = "meets" if result.meets_goal else "MISSES"
    lines.append(
        f"worst p50 ratio {result.worst_ratio_p50:.2f}x: {verdict} the goal of "
        f"<= {result.goal_ratio}x of raw Crocoddyl"
    )
    return lines


def format_value(result: ValueBenchResult) -> list[str]:
    """The ``vmpc bench value`` tables: per-call times, then one FDDP iteration per horizon."""
    from vmpc.benches.value import TERMINALS

    lines = [
        f"vmpc bench value: {result.model} ({result.architecture}, hidden "
        f"{result.hidden}, residual {result.residual_dim})",
        f"{'terminal':>12} {'calc us':>9} {'calcDiff us':>12}",
    ]
    for k in TERMINALS:
        c = result.calls[k]
        lines.append(f"{k:>12} {c.calc_us:>9.1f} {c.calc_diff_us:>12.1f}")
    for title, warm in (
        ("from a fixed converged solution", False),
        ("warm-started from the previous iteration, x0 drifting (MPC-like)", True),
    ):
        lines.append(f"one FDDP iteration {title}, median of {result.iterations}:")
        lines.append(
            f"{'T':>5} {'C++ quad':>10} {'fast':>10} {'ratio':>7} {'torchscr.':>10} {'ratio':>7}"
        )
        for r in result.rows:
            quad, fast, ts, rf, rts = (
                (
                    r.quadratic_warm_ms_p50,
                    r.fast_warm_ms_p50,
                    r.torchscript_warm_ms_p50,
                    r.ratio_fast_warm,
                    r.ratio_torchscript_warm,
                )
                if warm
                else (
                    r.quadratic_ms_p50,
                    r.fast_ms_p50,
                    r.torchscript_ms_p50,
                    r.ratio_fast,
                    r.ratio_torchscript,
                )
            )
            lines.append(
                f"{r.horizon:>5} {quad:>8.3f}ms {fast:>8.3f}ms {rf:>6.2f}x "
                f"{ts:>8.3f}ms {rts:>6.2f}x"
            )
    return lines


def format_bridge(result: BridgeBenchResult) -> list[str]:
    """The ``vmpc bench bridge`` table: one labelled line per figure, then the goals."""
    lat, rate, rtf = result.latency, result.publish_rate, result.rtf
    L, C, H = lat["latency_ms"], lat["command_to_effect_ticks"], lat["hook_us"]
    load0, load1 = result.machine.load_1min

    def f(x: float | None, d: int = 3) -> str:
        return "n/a" if x is None else f"{x:.{d}f}"

    def rtf_row(k: str) -> str:
        return (
            f"{rtf['best'][k]:.2f}x best, ratio {rtf[f'ratio_best_{k}']:.3f} (median of "
            f"ratios {rtf[f'ratio_median_{k}']:.3f}, "
            f"CPU time {rtf[f'cpu_ratio_best_{k}']:.3f})"
        )

    rows = [
        (
            "state latency, publish -> receive",
            f"p50 {f(L['p50'])} ms, p99 {f(L['p99'])} ms, "
            f"max {f(L['max'])} ms ({L['n']} msgs at 1 kHz)",
        ),
        ("messages lost", f"{lat['lost']} of {lat['published']} (subscriber not conflating)"),
        (
            "command -> applied",
            f"p50 {f(C['applied_p50'], 1)} ticks, max "
            f"{f(C['applied_max'], 0)} ({C['commands']} commands, "
            f"set_target and push alternately)",
        ),
        (
            "command -> visible in stream",
            f"p50 {f(C['visible_p50'], 1)} ticks, max {f(C['visible_max'], 0)}",
        ),
        (
            "bridge work per tick (1 kHz)",
            f"p50 {f(H['p50'], 1)} us, p99 {f(H['p99'], 1)} us, max {f(H['max'], 1)} us",
        ),
        (
            "max publish rate",
            f"{rate['conflate_on']['sent_per_s']:,.0f} msg/s from the publish "
            f"path; a counting subscriber gets "
            f"{rate['conflate_off']['received_per_s']:,.0f} msg/s (conflate "
            f"off), {rate['conflate_on']['received_per_s']:,.0f} (on)",
        ),
        (
            "RTF lockstep, bridge off",
            f"{rtf['best']['off']:.2f}x best, {rtf['median']['off']:.2f}x median",
        ),
        ("RTF on, every 2 ticks, no subscriber", rtf_row("on_alone")),
        ("RTF on, every 2 ticks, watched", rtf_row("on_watch")),
        ("RTF on, every tick, all taken", rtf_row("on_all")),
        (
            "machine load (1 min)",
            f"{load0:.1f} at start, {load1:.1f} at the end, {result.machine.cores} cores",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    g = result.goals
    return [
        f"vmpc bench bridge: {result.config}, loopback, {result.repeats} interleaved "
        f"{result.rtf_seconds:g} s RTF runs per side",
        *(f"  {k:<{width}}  {v}" for k, v in rows),
        f"p99 latency {'meets' if g.p99_met else 'MISSES'} the goal of <= {g.p99_ms:g} ms; "
        f"RTF ratio (default period, watched) {'meets' if g.rtf_met else 'MISSES'} the goal of "
        f">= {g.rtf_ratio:g}x",
    ]


def format_sobolev(result: SobolevBenchResult) -> list[str]:
    """The ``vmpc bench sobolev`` table: held-out error per size, then the samples needed."""
    need, ratio = result.samples_needed, result.ratio
    lines = [
        f"vmpc bench sobolev: {result.system}, value error on {result.held_out} held-out "
        f"states, {result.steps} gradient steps per fit",
        f"{'samples':>8} {'sobolev':>10} {'plain':>10}",
    ]
    for r in result.rows:
        lines.append(f"{r.samples:>8} {r.sobolev:>9.3%} {r.plain:>9.3%}")
    lines.append(
        f"to reach {result.target_error:.3%} (plain regression's error at "
        f"{result.rows[-1].samples} samples): "
        f"Sobolev needs {need['sobolev']}, plain {need['plain']} samples"
        + (f" -> ratio {ratio:.2f} (goal <= 0.33)" if ratio else "")
    )
    return lines


def format_dvp(result: ThroughputResult) -> list[str]:
    """The ``vmpc bench dvp`` table: OCP/s and the speed-up over one worker per setting."""
    from vmpc.benches.dvp import ExecutorFailure

    lines = [
        f"vmpc bench dvp: {result.system}, {result.samples} OCPs of horizon {result.horizon}, "
        "zero terminal",
        f"{'executor':>9} {'workers':>8} {'OCP/s':>9} {'speed-up':>9}",
    ]
    for r in result.rows:
        if isinstance(r, ExecutorFailure):
            lines.append(f"{r.executor:>9} {r.workers:>8}  {r.error}")
            continue
        sp = f"{r.speedup_vs_1:.2f}x" if r.speedup_vs_1 else "-"
        lines.append(f"{r.executor:>9} {r.workers:>8} {r.solves_per_s:>9.1f} {sp:>9}")
    return lines


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# -- the verbs -------------------------------------------------------------------------------
def cmd_bench_mpc(args: argparse.Namespace) -> int:
    from vmpc.benches.mpc import bench_mpc

    result = bench_mpc(
        args.config,
        horizons=args.horizons,
        replans=args.replans,
        out=Path(args.out),
        overrides=args.set or [],
        progress=not args.quiet,
    )
    _print_lines(format_mpc(result))
    print(f"wrote {result.json_path}")
    return EXIT_OK


def cmd_bench_value(args: argparse.Namespace) -> int:
    from vmpc.benches.value import bench_value

    result = bench_value(
        args.config, args.value, args.horizons, args.iterations, Path(args.out), args.set or []
    )
    _print_lines(format_value(result))
    print(f"wrote {result.json_path}")
    return EXIT_OK


def cmd_bench_bridge(args: argparse.Namespace) -> int:
    from vmpc.benches.bridge import bench_bridge

    result = bench_bridge(
        args.config,
        duration=args.duration,
        repeats=args.repeats,
        out=Path(args.out),
        overrides=args.set or [],
        log=None if args.quiet else _stderr,
    )
    _print_lines(format_bridge(result))
    print(f"wrote {result.json_path}")
    return EXIT_OK


def cmd_bench_sobolev(args: argparse.Namespace) -> int:
    from learning.dvp.config import load_dvp_config
    from vmpc.benches.sobolev import bench_sobolev

    cfg = load_dvp_config(args.config, args.set or [])
    result = bench_sobolev(cfg, args.sizes, args.steps, Path(args.out), progress=not args.quiet)
    _print_lines(format_sobolev(result))
    return EXIT_OK


def cmd_bench_dvp(args: argparse.Namespace) -> int:
    from learning.dvp.config import load_dvp_config
    from vmpc.benches.dvp import bench_throughput

    cfg = load_dvp_config(args.config, args.set or [])
    settings = [(kind, w) for kind in args.executors for w in args.workers]
    result = bench_throughput(cfg, args.samples, settings, Path(args.out))
    _print_lines(format_dvp(result))
    return EXIT_OK


def format_swap(r: SwapBenchResult) -> list[str]:
    from vmpc.benches.swap import GOAL_EXTRA_GAP_MS

    rows = [("without swaps", r.without), ("with swaps", r.with_swaps)]
    lines = [
        f"vmpc bench swap: {r.config}, wallclock, {r.with_swaps.swaps_requested} swaps every "
        f"{r.period_s:g} s between {r.value} and the quadratic terminal",
        f"{'run':>14} {'accepted':>9} {'max gap':>9} {'(run)':>9} {'p99.9':>8} {'p50':>7} "
        f"{'misses':>7}",
    ]
    for name, run in rows:
        lines.append(
            f"{name:>14} {run.swaps_accepted:>5}/{run.swaps_requested:<3} "
            f"{run.max_gap_ms:>7.2f}ms {run.max_gap_run_ms:>7.2f}ms {run.p999_gap_ms:>6.2f}ms "
            f"{run.p50_gap_ms:>5.2f}ms "
            f"{run.deadline_misses:>7}"
        )
    verdict = "meets" if r.meets_goal else "MISSES"
    lines.append(
        f"max gap: in the 0.1 s after each swap request (and over the whole run); longest "
        f"gap {r.extra_gap_ms:+.2f} ms with swaps: {verdict} the goal of <= "
        f"{GOAL_EXTRA_GAP_MS:g} ms"
    )
    lines.append(f"wrote {r.json_path}")
    return lines


def cmd_bench_swap(args: argparse.Namespace) -> int:
    from vmpc.benches.swap import bench_swap

    result = bench_swap(
        args.config,
        args.value,
        Path(args.out),
        swaps=args.swaps,
        period_s=args.period,
        overrides=args.set or [],
    )
    for line in format_swap(result):
        print(line)
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

    bw = bsub.add_parser(
        "swap",
        help="longest gap between two ticks while models are swapped, vs without swaps",
        description="Two wallclock runs of the same config, without swaps and with --swaps "
        "swaps alternating between --value and the quadratic terminal every --period s; "
        "reports the longest gap between two control ticks of each (a load that held the "
        "GIL shows as one long gap) and writes bench_swap.json. Goal: <= 1 ms more with "
        "swaps.",
    )
    add_config(bw)
    bw.add_argument("--value", default="models/iiwa_dvp.pt", help="the model swapped in")
    bw.add_argument("--swaps", type=int, default=20, help="swaps in the second run")
    bw.add_argument("--period", type=float, default=0.25, help="[s] between swaps")
    add_set(bw)
    add_out(bw, "runs/bench", "folder for bench_swap.json")
    bw.set_defaults(func=cmd_bench_swap)
