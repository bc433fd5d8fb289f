"""``vmpc bench ...``: benchmarks that measure side by side in one run and print ratios.

mpc (replan time vs raw Crocoddyl), value (cost of the learned terminal), bridge (latency and
real-time factor with the bridge on vs off), sobolev (samples Sobolev regression saves), dvp
(OCP solves per second per executor), swap (tick gaps with vs without model swaps) and soak (a
long wallclock run under pushes, swaps and a fuzzer). The measurements live in :mod:`vmpc.benches`.
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
    from vmpc.benches.soak import SoakResult
    from vmpc.benches.sobolev import SobolevBenchResult
    from vmpc.benches.swap import SwapBenchResult
    from vmpc.benches.value import ValueBenchResult

__all__ = [
    "add_bench_commands",
    "format_bridge",
    "format_dvp",
    "format_mpc",
    "format_soak",
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


def format_dvp(
    result: ThroughputResult, what: str = "dvp", note: str = "zero terminal"
) -> list[str]:
    """The ``vmpc bench dvp|plal`` table: OCP/s and the speed-up over one worker per setting."""
    from vmpc.benches.dvp import ExecutorFailure

    lines = [
        f"vmpc bench {what}: {result.system}, {result.samples} OCPs of horizon {result.horizon}, "
        f"{note}",
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


def cmd_bench_plal(args: argparse.Namespace) -> int:
    from learning.plal.config import load_plal_config
    from vmpc.benches.plal import bench_oc_phase

    cfg = load_plal_config(args.config, args.set or [])
    settings = [(kind, w) for kind in args.executors for w in args.workers]
    result = bench_oc_phase(cfg, args.samples, settings, Path(args.out))
    _print_lines(format_dvp(result, "plal", "PLAL's OC phase (consensus through the policy)"))
    return EXIT_OK


def format_swap(r: SwapBenchResult) -> list[str]:
    from vmpc.benches.swap import GOAL_EXTRA_GAP_MS

    rows = [("without swaps", r.without), ("with swaps", r.with_swaps)]
    lines = [
        f"vmpc bench swap: {r.config}, wallclock, {r.with_swaps.swaps_requested} swaps every "
        f"{r.period_s:g} s between {r.value} and the quadratic terminal, prepared in a "
        f"{r.worker}",
        f"{'run':>14} {'accepted':>9} {'max gap':>9} {'median':>8} {'(run)':>9} {'p99.9':>8} "
        f"{'p50':>7} {'misses':>7}",
    ]
    for name, run in rows:
        lines.append(
            f"{name:>14} {run.swaps_accepted:>5}/{run.swaps_requested:<3} "
            f"{run.max_gap_ms:>7.2f}ms {run.median_window_max_gap_ms:>6.2f}ms "
            f"{run.max_gap_run_ms:>7.2f}ms {run.p999_gap_ms:>6.2f}ms {run.p50_gap_ms:>5.2f}ms "
            f"{run.deadline_misses:>7}"
        )
    for reason in r.with_swaps.refusals:
        lines.append(f"  refused: {reason}")
    verdict = "meets" if r.meets_goal else "MISSES"
    lines.append(
        "max gap: over the windows from each swap request to 50 ms after it went live "
        "(median: of each window's longest gap; run: over the whole run, machine noise "
        "included)"
    )
    lines.append(
        f"longest gap {r.extra_gap_ms:+.2f} ms with swaps: {verdict} the goal of <= "
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

    bp = bsub.add_parser(
        "plal",
        help="PLAL's OC phase: OCP solves per second per executor and worker count",
        description="Solves the same sampled problems of a policy config with PLAL's consensus "
        "term (through a seeded random policy) on each executor and worker count (after a "
        "warm-up), and prints OCP/s and the speed-up over one worker.",
    )
    add_config(bp, None, "a policy config, e.g. configs/plal_pendulum.yaml")
    bp.add_argument("--samples", type=int, default=64)
    bp.add_argument("--executors", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    bp.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_set(bp)
    add_out(bp, "runs/bench", "folder for bench_plal_<system>.json")
    bp.set_defaults(func=cmd_bench_plal)

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

    _add_soak_command(bsub)


# -- vmpc bench soak -------------------------------------------------------------------------
def format_soak(r: SoakResult) -> list[str]:
    """The ``vmpc bench soak`` table: the loop's fate, the summary's counters, what every client
    sent and got, RSS over the run, then the verdict."""
    from vmpc.benches.soak import GOAL_RSS_GROWTH_MB

    def mb(x: float | None, sign: bool = False) -> str:
        return "n/a" if x is None else (f"{x:+.1f}" if sign else f"{x:.1f}")

    s, c, f = r.summary, r.clients, r.fuzz
    fate = (
        f"CRASHED: {r.crash_reason}"
        if r.crashed
        else f"exited {r.exit_code}, no crash (the benchmark took {r.wall_s:.0f} s)"
    )
    states = f"{c.states_nonfinite} of {c.states_seen} states seen"
    rows = [("loop process", fate)]
    if s is None:
        rows.append(("summary.json", f"not written ({r.run_dir})"))
    else:
        b = s.get("bridge", {})
        sm = s["solve_ms"]
        rate = s["deadline_misses"] / max(1, s["replans"])
        rows += [
            ("non-finite torques", f"{s['nonfinite_torques']} (summary), {states}"),
            (
                "deadline misses",
                f"{s['deadline_misses']} of {s['replans']} replans ({rate:.2%}); solve p50 "
                f"{sm['p50']:.3f} ms, p99 {sm['p99']:.3f}, max {sm['max']:.2f}",
            ),
            (
                "fallbacks, watchdogs",
                f"fallback {s['fallback_entries']} ({s['fallback_ticks']} ticks), brakes "
                f"{s['state_brakes'] + s['plan_age_brakes']} ({s['brake_ticks']} ticks), bad "
                f"states {s['state_watchdog_entries']}, stale plans {s['stale_plans_skipped']}, "
                f"terminal reverts {s['terminal_reverts']}, solver failures "
                f"{s['solver_failures']}",
            ),
            (
                "real-time factor",
                f"{s['real_time_factor']:.3f}x over {s['sim_steps']} sim steps",
            ),
            (
                "bridge (server side)",
                f"{b.get('received', 0)} commands: {b.get('applied', 0)} applied, "
                f"{b.get('refused', 0)} refused, {b.get('bad', 0)} bad; "
                f"{b.get('connections_closed', 0)} connections closed; internal errors "
                f"{b.get('internal_errors', 'n/a')}; hook p99 "
                f"{b.get('hook_us', {}).get('p99', 'n/a')} us",
            ),
        ]
    refusals = ", ".join(f"{n}x {k}" for k, n in c.push_refusals.items())
    swap_refusals = ", ".join(f"{n}x {k}" for k, n in c.swap_refusals.items())
    kinds = len(f.by_kind)
    rows += [
        (
            "pushes",
            f"{c.pushes_sent} sent, {c.pushes_accepted} accepted, "
            f"{sum(c.push_refusals.values())} refused{f' ({refusals})' if refusals else ''}, "
            f"{c.push_timeouts} timed out",
        ),
        ("wrench stream", f"{c.wrench_samples} samples at 50 Hz"),
        (
            "swaps",
            f"{c.swaps_requested} requested, {c.swaps_accepted} accepted (to the model "
            f"{c.value_swaps_accepted}/{c.value_swaps_requested}), "
            f"{sum(c.swap_refusals.values())} refused"
            f"{f' ({swap_refusals})' if swap_refusals else ''}, {c.swap_timeouts} timed out",
        ),
        (
            "fuzz",
            f"{f.sent} messages of {kinds} kinds ({f.bytes_sent / 2**20:.1f} MB, "
            f"{f.identities} identities): {f.replies} replies, {f.error_replies} errors, "
            f"{f.ok_replies} ok (valid odd ids), {f.applied} APPLIED",
        ),
        (
            "status after fuzzing",
            "answered" if f.alive_after else "NO ANSWER",
        ),
        (
            "status during the run",
            f"{c.status_ok} answered, {c.status_failed} timed out",
        ),
    ]
    if r.rss:
        a, z = r.rss[0], r.rss[-1]
        rows += [
            (
                "RSS (VmRSS)",
                f"start {mb(r.rss_start_mb)} MB, end {mb(r.rss_end_mb)}, max "
                f"{mb(r.rss_max_mb)}; growth {mb(r.rss_growth_mb, True)} MB (second half "
                f"{mb(r.rss_growth_second_half_mb, True)})",
            ),
            (
                "RSS net of the run log",
                f"growth {mb(r.net_growth_mb, True)} MB (second half "
                f"{mb(r.net_growth_second_half_mb, True)}); run log written "
                f"{z.log_mb - a.log_mb:.1f} MB; {len(r.rss)} samples",
            ),
            ("fds, threads", f"{a.fds} -> {z.fds}, {a.threads} -> {z.threads}"),
        ]
    else:
        rows.append(("RSS", "no samples"))
    if c.errors:
        rows.append(("CLIENT ERRORS", "; ".join(c.errors)))
    width = max(len(k) for k, _ in rows)
    verdict = "meets" if r.meets_goal else f"MISSES ({', '.join(r.goal_failures)})"
    return [
        f"vmpc bench soak: {r.config}, {r.duration_s:g} s wallclock with the bridge; a swap every "
        f"{r.swap_period_s:g} s ({r.value} <-> quadratic), random pushes, a 50 Hz wrench stream, "
        f"fuzz at {r.fuzz_rate_hz:g} msg/s, seed {r.seed}",
        *(f"  {k:<{width}}  {v}" for k, v in rows),
        f"{verdict} the goal: no crash, no non-finite torque, no fuzz message applied, an answer "
        f"after fuzzing, no bridge internal error, swaps to the model accepted, RSS growth net of "
        f"the run log <= "
        f"{GOAL_RSS_GROWTH_MB:g} MB",
        f"wrote {r.json_path}" + (f" and {r.plot_path}" if r.plot_path else ""),
    ]


def cmd_bench_soak(args: argparse.Namespace) -> int:
    import math

    from vmpc.benches.soak import bench_soak

    from .common import UsageError

    for flag, v, low in (
        ("--duration", args.duration, 0.0),
        ("--swap-period", args.swap_period, 0.0),
    ):
        if not (math.isfinite(v) and v > low):
            raise UsageError(f"{flag} must be a positive number of seconds")
    if not (math.isfinite(args.fuzz_rate) and args.fuzz_rate >= 0):
        raise UsageError("--fuzz-rate must be a number of messages per second >= 0 (0: off)")
    if args.value not in ("none", "quadratic") and not Path(args.value).is_file():
        raise UsageError(f"--value {args.value}: no such file")
    result = bench_soak(
        args.config,
        args.duration,
        args.value,
        Path(args.out),
        swap_period_s=args.swap_period,
        seed=args.seed,
        fuzz_rate_hz=args.fuzz_rate,
        overrides=args.set or [],
        log=None if args.quiet else _stderr,
    )
    _print_lines(format_soak(result))
    return EXIT_OK


def _add_soak_command(bsub: Any) -> None:
    bk = bsub.add_parser(
        "soak",
        help="long wallclock run under pushes, a wrench stream, swaps and a fuzzer: crashes, "
        "non-finite torques, deadline misses, RSS over time",
        description="Runs `vmpc sim --bridge` (wallclock, loopback, ports picked by the OS) as "
        "its own process for --duration s while clients send random pushes, stream a wrench "
        "at 50 Hz, swap the terminal every --swap-period s (--value <-> quadratic), watch the "
        "state stream and fuzz the bridge with malformed and hostile messages. Samples the "
        "loop's RSS from /proc, reads its summary.json, prints a table and writes "
        "bench_soak.json and soak_rss.png. Goal: no crash, no non-finite torque, RSS growth "
        "(net of the run log's pages) <= 50 MB.",
    )
    add_config(bk)
    bk.add_argument(
        "--duration", type=float, default=600.0, help="[s] of the run (default 600: 10 min)"
    )
    bk.add_argument("--value", default="models/iiwa_dvp.pt", help="the model swapped in")
    bk.add_argument("--swap-period", type=float, default=3.0, help="[s] between swaps (default 3)")
    bk.add_argument("--seed", type=int, default=0, help="seed of pushes, stream and fuzzer")
    bk.add_argument(
        "--fuzz-rate", type=float, default=100.0, help="fuzz messages per second (0: no fuzzer)"
    )
    add_set(bk)
    add_out(bk, "runs/bench", "folder for bench_soak.json, soak_rss.png and the run (soak-run/)")
    add_quiet(bk)
    bk.set_defaults(func=cmd_bench_soak)
