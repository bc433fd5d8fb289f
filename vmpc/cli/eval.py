"""``vmpc eval ...``: closed-loop studies; ``horizons`` compares horizons and terminals on
held-out episodes (``--sweep``: every terminal kind at every horizon, the Pareto picture), and
``compare`` puts a few controllers side by side on the config's own run (the end of
``make demo``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import EXIT_OK, UsageError, add_config, add_group, add_out, add_quiet, add_set, cores

__all__ = ["add_eval_commands"]


def _out(args: argparse.Namespace, prefix: str) -> Path:
    return Path(args.out) if args.out else Path("runs") / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")


def cmd_eval_horizons(args: argparse.Namespace) -> int:
    from vmpc.studies.horizons import (
        DEFAULT_CONTROLLERS,
        DEFAULT_SWEEP_HORIZONS,
        DEFAULT_SWEEP_TERMINALS,
        PushSetup,
        StudySettings,
        eval_horizons,
        eval_sweep,
        format_sweep_table,
        format_table,
        sweep_grid,
    )

    if args.seed < 0:  # a negative seed crashed in numpy after the runs started
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    # Flags with their defaults are taken as not given (argparse cannot tell them apart).
    if args.sweep and args.controllers != list(DEFAULT_CONTROLLERS):
        raise UsageError(
            "--controllers and --sweep exclude each other: a sweep runs --horizons x --terminals"
        )
    sweep_flags = (args.horizons, args.terminals)
    if not args.sweep and sweep_flags != (
        list(DEFAULT_SWEEP_HORIZONS),  # ints: a given --horizons is strings
        list(DEFAULT_SWEEP_TERMINALS),
    ):
        raise UsageError("--horizons and --terminals choose a sweep's controllers: add --sweep")
    out = _out(args, "eval")
    variants = ("push",) if args.push else ("no_push",) if args.no_push else ("no_push", "push")
    settings = StudySettings(
        config=args.config,
        value=args.value[0],
        more_values=tuple(args.value[1:]),
        starts=args.starts,
        controllers=tuple(args.controllers),
        reference=args.reference,
        duration_s=args.duration,
        replan_every=args.replan_every,
        variants=variants,
        push=PushSetup(args.push_force, args.push_duration, args.push_at),
        q_spread_rad=args.q_spread,
        workers=args.workers,
        seed=args.seed,
        overrides=tuple(args.set or ()),
    )
    if args.sweep and len(args.value) > 1:
        raise UsageError("--sweep takes one --value; compare two with --controllers")
    plot = not args.no_plots
    if args.sweep:
        sweep_grid(args.horizons, args.terminals)  # bad flags fail before anything loads
        _, sweep = eval_sweep(
            settings, args.horizons, args.terminals, out=out, progress=not args.quiet, plot=plot
        )
        print(format_sweep_table(sweep))
        print(
            f"  outputs: {out}/sweep.json, sweep.csv{', sweep.png' if plot else ''}, "
            f"horizons.json, horizons.csv, runs.csv  ({sweep.wall_s:.0f} s)"
        )
        return EXIT_OK
    result = eval_horizons(settings, out=out, progress=not args.quiet, plot=plot)
    print(format_table(result))
    print(
        f"  outputs: {out}/horizons.json, horizons.csv, runs.csv"
        f"{', horizons.png' if plot else ''}  ({result.wall_s:.0f} s)"
    )
    return EXIT_OK


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from vmpc.studies.horizons import (
        COMPARE_REFERENCE,
        StudySettings,
        eval_horizons,
        format_compare,
    )

    out = _out(args, "compare")
    reference = args.reference
    if reference is None and COMPARE_REFERENCE in args.controllers:
        reference = COMPARE_REFERENCE
    settings = StudySettings(
        config=args.config,
        value=args.value[0],
        more_values=tuple(args.value[1:]),
        starts=1,
        controllers=tuple(args.controllers),
        reference=reference,
        duration_s=args.duration,
        replan_every=args.replan_every,
        variants=("no_push",) if args.no_push else ("push",),
        workers=args.workers,
        overrides=tuple(args.set or ()),
        episodes="config",
    )
    plot = not args.no_plots
    result = eval_horizons(settings, out=out, progress=not args.quiet, plot=plot)
    print(format_compare(result))
    print(
        f"  outputs: {out}/horizons.json, horizons.csv, runs.csv"
        f"{', horizons.png' if plot else ''}  ({result.wall_s:.0f} s)"
    )
    return EXIT_OK


def _add_value(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument(
        "--value",
        required=True,
        nargs="+",
        metavar="PATH",
        help="learned value artifact (inside value.allowed_dirs), used by the *-learned "
        "controllers" + more + "; a 2nd, 3rd, ... path is used by the *-learned2, "
        "*-learned3, ... controllers (two values side by side, e.g. --value dvp.pt "
        "critic.pt --controllers T10-learned T10-learned2 T200-quadratic)",
    )


def _add_run_flags(p: argparse.ArgumentParser, n_cores: int) -> None:
    """Flags the studies share: run length, replan rate, workers, overrides."""
    p.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="sim time per run [s] (default: run.duration of the config)",
    )
    p.add_argument(
        "--replan-every",
        type=int,
        default=10,
        metavar="K",
        help="sim steps between replans, the same for every controller (10 keeps T=200 affordable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=n_cores,
        metavar="W",
        help="parallel processes over runs (default: all cores); more workers than "
        "cores inflate the measured solve times",
    )
    add_set(
        p,
        "override any config value for every run (repeatable); the study's own "
        "settings (horizon, terminal, q0, target, pushes, timing) take precedence",
    )


def cmd_eval_warmstart(args: argparse.Namespace) -> int:
    from learning.executors import ExecutorSpec
    from learning.plal.config import load_plal_config
    from mpc.policy.artifact import load_policy_model
    from vmpc.studies.warmstart import format_warmstart, warmstart_study, write_warmstart

    if args.problems < 1 or args.maxiter < 1 or args.tol <= 0:
        raise UsageError("--problems and --maxiter must be >= 1 and --tol > 0")
    cfg = load_plal_config(args.config, list(args.set or []))
    path = Path(args.policy)
    policy = load_policy_model(path, [path.resolve().parent])
    res = warmstart_study(
        cfg,
        policy,
        problems=args.problems,
        tolerance=args.tol,
        maxiter=args.maxiter,
        seed=args.seed,
        executor=ExecutorSpec(workers=args.workers) if args.workers else None,
        progress=not args.quiet,
    )
    out = _out(args, "warmstart")
    write_warmstart(res, out, f"{policy.model_id} on {cfg.system.kind}")
    print(format_warmstart(res))
    print(f"warmstart.json and warmstart.png in {out}")
    return EXIT_OK


def cmd_eval_switch(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from mpc.io import atomic_write_text
    from vmpc.studies.warmstart import format_switches, loop_switch_study

    if args.switches < 1 or args.horizon < 1 or args.maxiter < 1 or args.distance <= 0:
        raise UsageError("--switches, --horizon and --maxiter must be >= 1, --distance > 0")
    res = loop_switch_study(
        args.config,
        args.policy,
        switches=args.switches,
        horizon=args.horizon,
        maxiter=args.maxiter,
        distance_m=args.distance,
        settle_s=args.settle,
        window_s=args.window,
        seed=args.seed,
        overrides=list(args.set or []),
        progress=not args.quiet,
    )
    out = _out(args, "switch")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "switches.json", json.dumps(asdict(res), indent=1))
    print(format_switches(res))
    print(f"switches.json in {out}")
    return EXIT_OK


def _progress_log(args: argparse.Namespace) -> Callable[[str], None]:
    """A study's progress lines on stdout, or nowhere with -q."""
    return (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))


def cmd_eval_critic_toy(args: argparse.Namespace) -> int:
    from vmpc.studies.critics import QUADRATIC_DEFAULTS, format_toy_table, toy_table

    if args.seeds < 1 or args.workers < 1:
        raise UsageError("--seeds and --workers must be >= 1")
    out = _out(args, "critic-toy")
    table = toy_table(
        args.config,
        out,
        seeds=args.seeds,
        overrides=list(args.set or []),
        quadratic_overrides=args.quadratic_set or list(QUADRATIC_DEFAULTS),
        workers=args.workers,
        log=_progress_log(args),
    )
    print(format_toy_table(table))
    print(f"table.json, slices.png and one run folder per row in {out}")
    return EXIT_OK


def cmd_eval_critics(args: argparse.Namespace) -> int:
    from vmpc.studies.critics import critics_study, format_critics

    if args.seeds < 1 or args.workers < 1:
        raise UsageError("--seeds and --workers must be >= 1")
    out = _out(args, "critics")
    study = critics_study(
        args.config,
        out,
        seeds=args.seeds,
        variants=args.variants,
        overrides=list(args.set or []),
        sb3=args.sb3,
        workers=args.workers,
        log=_progress_log(args),
    )
    print(format_critics(study))
    print(f"study.json, returns.png and one run folder per variant and seed in {out}")
    return EXIT_OK


def add_eval_commands(sub: Any) -> None:
    from vmpc.studies.critics import QUADRATIC_DEFAULTS
    from vmpc.studies.horizons import (
        COMPARE_CONTROLLERS,
        COMPARE_REFERENCE,
        DEFAULT_CONTROLLERS,
        DEFAULT_REFERENCE,
        DEFAULT_SEED,
        DEFAULT_SWEEP_HORIZONS,
        DEFAULT_SWEEP_TERMINALS,
    )

    _, es = add_group(sub, "eval", "closed-loop studies over held-out episodes", "STUDY")
    w = es.add_parser(
        "warmstart",
        help="solver iterations from the usual guess vs from a policy's rollout (paper Fig. 7)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="On held-out problems of a policy config (a seed no training uses), solves "
        "every OCP by BoxFDDP to --tol twice: from the usual still guess (x0 held; zero or "
        "gravity-holding controls) and from the closed-loop rollout of --policy. Prints "
        "the iteration counts (median, p90, max, how many need more than 100) and the mean "
        "cost reached, and writes warmstart.json and the histogram warmstart.png.",
    )
    add_config(w, help="policy config the policy was trained with, e.g. configs/plal_pendulum.yaml")
    w.add_argument("--policy", required=True, help="policy artifact (vmpc train plal|pddp)")
    w.add_argument("--problems", type=int, default=100, help="held-out problems")
    w.add_argument("--tol", type=float, default=1e-6, help="solver stopping tolerance")
    w.add_argument("--maxiter", type=int, default=500, help="solver iterations at most")
    w.add_argument("--seed", type=int, default=424242, help="held-out problems' seed")
    w.add_argument("--workers", type=int, help="solver processes (default: all cores)")
    add_out(w, None, "output folder (default runs/warmstart-<date>)")
    add_set(w)
    add_quiet(w)
    w.set_defaults(func=cmd_eval_warmstart)
    sw = es.add_parser(
        "switch",
        help="target switches in the closed loop: shifted warm start vs the policy's rollout",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs the closed loop of --config (an MPC config) at T=--horizon: it settles "
        "on its target, then the target jumps at least --distance to a new one (inside the "
        "policy's trained target box); the --window seconds after the switch are scored "
        "(running cost, solver iterations, final EE error), once with mpc.warm_start: shift "
        "and once starting from --policy's rollout, on the same switches. Writes switches.json.",
    )
    add_config(sw, help="MPC config, e.g. configs/iiwa_reach.yaml")
    sw.add_argument("--policy", required=True, help="target-conditioned policy artifact")
    sw.add_argument("--switches", type=int, default=10, help="target switches")
    sw.add_argument("--horizon", type=int, default=10, help="MPC horizon T [knots]")
    sw.add_argument("--maxiter", type=int, default=10, help="FDDP iterations per replan")
    sw.add_argument("--distance", type=float, default=0.2, help="minimum jump [m]")
    sw.add_argument("--settle", type=float, default=1.0, help="time before the switch [s]")
    sw.add_argument("--window", type=float, default=0.5, help="scored time after it [s]")
    sw.add_argument("--seed", type=int, default=424242, help="seed of the new targets")
    add_out(sw, None, "output folder (default runs/switch-<date>)")
    add_set(sw)
    add_quiet(sw)
    sw.set_defaults(func=cmd_eval_switch)
    n_cores = cores()
    h = es.add_parser(
        "horizons",
        help="learned value at a short horizon vs long horizons: cost and compute",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs the closed loop of --config for every controller on the same held-out "
        "episodes (random starts around robot.q0, and random reachable targets in "
        "task.workspace when the value is target-conditioned), each with and without "
        "a push, and compares closed-loop cost (per episode, relative to the "
        "reference), final error, settle and recovery times and solve time per "
        "replan. All controllers share the running cost, ocp.dt and the replan rate; "
        "timing is lockstep, so trajectories do not depend on machine load. Writes "
        "horizons.json, horizons.csv, runs.csv and horizons.png to --out and prints "
        "a table. With --sweep: every terminal kind of --terminals at every horizon of "
        "--horizons, against the longest quadratic; also writes sweep.json, sweep.csv "
        "and sweep.png (median cost ratio against median solve time, one curve per "
        "terminal kind) and prints one line per terminal kind and horizon.",
    )
    add_config(h, help="YAML config of the task")
    _add_value(h, "; its task parameters decide fixed vs held-out targets")
    h.add_argument("--starts", type=int, default=20, metavar="N", help="held-out episodes")
    h.add_argument(
        "--controllers",
        nargs="+",
        metavar="T<N>-KIND",
        default=list(DEFAULT_CONTROLLERS),
        help="controllers to compare, each T<horizon>-<learned|quadratic|none> (not with --sweep)",
    )
    h.add_argument(
        "--reference",
        metavar="LABEL",
        help=f"controller the costs and solve times are relative to (default "
        f"{DEFAULT_REFERENCE} if listed, else the longest horizon; with --sweep the "
        f"longest quadratic)",
    )
    h.add_argument(
        "--sweep",
        action="store_true",
        help="run every --terminals kind at every --horizons horizon: the Pareto picture of "
        "cost against solve time",
    )
    h.add_argument(
        "--horizons",
        nargs="+",
        metavar="T",
        default=list(DEFAULT_SWEEP_HORIZONS),
        help="a sweep's horizons [knots]",
    )
    h.add_argument(
        "--terminals",
        nargs="+",
        metavar="KIND",
        default=list(DEFAULT_SWEEP_TERMINALS),
        help="a sweep's terminal kinds, among learned, quadratic, none",
    )
    _add_run_flags(h, n_cores)
    g = h.add_mutually_exclusive_group()
    g.add_argument("--push", action="store_true", help="only the runs with the push")
    g.add_argument("--no-push", action="store_true", help="only the runs without the push")
    h.add_argument(
        "--push-force",
        type=float,
        default=50.0,
        metavar="N",
        help="push magnitude on the EE [N]; its direction is drawn per episode",
    )
    h.add_argument("--push-duration", type=float, default=0.1, metavar="S", help="[s]")
    h.add_argument(
        "--push-at", type=float, metavar="S", help="push start [s of sim time] (default: mid-run)"
    )
    h.add_argument(
        "--q-spread",
        type=float,
        default=0.3,
        metavar="RAD",
        help="starts are robot.q0 + U(-RAD, RAD) per joint, clipped 0.1 rad inside "
        "the joint limits",
    )
    h.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="episode seed, drawn from an RNG stream no trainer uses",
    )
    add_out(h, None, "output folder (default runs/eval-<date>-<time>)")
    h.add_argument("--no-plots", action="store_true", help="skip horizons.png (sweep.png)")
    add_quiet(h)
    h.set_defaults(func=cmd_eval_horizons)

    c = es.add_parser(
        "compare",
        help="a few controllers side by side on the config's own start, target and push",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs the closed loop of --config once per controller, from the config's "
        "own start (robot.q0), target and plant seed, under its first scheduled push, and "
        "prints them side by side: closed-loop cost and its ratio to the reference, final EE "
        "error, settle and recovery times, median solve time per replan and its ratio. The "
        "default is what a learned value is for: T=10 with the quadratic terminal, T=10 "
        "ending in the value, and T=100 with the quadratic terminal. Lockstep timing and one "
        "replan rate for all, as in `vmpc eval horizons`; writes horizons.json, horizons.csv, "
        "runs.csv and horizons.png to --out.",
    )
    add_config(c, help="YAML config of the task (its q0, target, seed and first push)")
    _add_value(c)
    c.add_argument(
        "--controllers",
        nargs="+",
        default=list(COMPARE_CONTROLLERS),
        metavar="T<N>-KIND",
        help="controllers to compare, each T<horizon>-<learned|quadratic|none>",
    )
    c.add_argument(
        "--reference",
        metavar="LABEL",
        help=f"controller the cost and solve time are relative to (default "
        f"{COMPARE_REFERENCE} if listed, else the longest horizon)",
    )
    _add_run_flags(c, n_cores)
    c.add_argument(
        "--no-push", action="store_true", help="without the config's push (its first scheduled)"
    )
    add_out(c, None, "output folder (default runs/compare-<date>-<time>)")
    c.add_argument("--no-plots", action="store_true", help="skip horizons.png")
    add_quiet(c)
    c.set_defaults(func=cmd_eval_compare)
    t = es.add_parser(
        "critic-toy",
        help="Schramm et al.'s Table 1: value-only vs first-order Q-learning on the 1D toy",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Trains the four rows of Schramm et al.'s Table 1 (quadratic and MLP "
        "critic, value-only and first-order TD) with --seeds independent critics each, and "
        "prints the MSE to Q*, to grad_a Q* and of the greedy policy to a* beside the paper's "
        "numbers. The quadratic rows take --quadratic-set on top of the config. Writes "
        "table.json, slices.png (Q(s, .) against Q*, "
        "the paper's Fig. 1) and the four run folders to --out.",
    )
    add_config(t, "configs/critic_toy.yaml", "the toy's critic config")
    t.add_argument("--seeds", type=int, default=5, help="independent critics per row")
    t.add_argument(
        "--quadratic-set",
        action="append",
        metavar="KEY=VALUE",
        help="overrides of the quadratic rows only (repeatable; default "
        f"{' '.join(QUADRATIC_DEFAULTS)}: at the paper's lr 1e-4 the six parameters have not "
        "converged after 20,000 updates)",
    )
    t.add_argument("--workers", type=int, default=2, help="rows trained in parallel")
    add_out(t, None, "output folder (default runs/critic-toy-<date>-<time>)")
    add_set(t)
    add_quiet(t)
    t.set_defaults(func=cmd_eval_critic_toy)
    v = es.add_parser(
        "critics",
        help="SAC against VG-SAC (nominal / finite-difference Jacobians) over seeds",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Trains each variant of a SAC critic config with --seeds seeds in one "
        "study (sac: value-only; vg-sac: first-order with the nominal model's Jacobians; "
        "vg-sac-fd: with finite differences of the nominal model; vg-sac-exact: with the real "
        "system's own Jacobians), then prints the final held-out returns and the environment "
        "steps each variant's mean curve needs to first reach SAC's final return, and their "
        "ratio to SAC's own. --sb3 adds stable-baselines3's SAC once on the same environment "
        "as the reference. Writes study.json, returns.png (mean and min-max band over seeds) "
        "and every run folder to --out.",
    )
    add_config(v, None, "SAC critic config, e.g. configs/critic_pendulum.yaml")
    v.add_argument("--seeds", type=int, default=3, help="runs per variant")
    v.add_argument(
        "--variants",
        nargs="+",
        default=["sac", "vg-sac", "vg-sac-fd"],
        choices=["sac", "vg-sac", "vg-sac-fd", "vg-sac-exact"],
        help="variants to train (sac is always included: the others are measured against it)",
    )
    v.add_argument("--sb3", action="store_true", help="also stable-baselines3's SAC, one seed")
    v.add_argument("--workers", type=int, default=2, help="runs trained in parallel")
    add_out(v, None, "output folder (default runs/critics-<date>-<time>)")
    add_set(v)
    add_quiet(v)
    v.set_defaults(func=cmd_eval_critics)
