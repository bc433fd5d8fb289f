"""``vmpc eval ...``: closed-loop studies; ``horizons`` compares horizons and terminals."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import EXIT_OK, UsageError, add_config, add_group, add_out, add_quiet, add_set, cores

__all__ = ["add_eval_commands"]


def cmd_eval_horizons(args: argparse.Namespace) -> int:
    from vmpc.studies.horizons import PushSetup, StudySettings, eval_horizons, format_table

    if args.seed < 0:  # a negative seed crashed in numpy after the runs started
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out) if args.out else Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")
    variants = ("push",) if args.push else ("no_push",) if args.no_push else ("no_push", "push")
    settings = StudySettings(
        config=args.config,
        value=args.value,
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
    result = eval_horizons(settings, out=out, progress=not args.quiet, plot=not args.no_plots)
    print(format_table(result))
    print(
        f"  outputs: {out}/horizons.json, horizons.csv, runs.csv"
        f"{'' if args.no_plots else ', horizons.png'}  ({result.wall_s:.0f} s)"
    )
    return EXIT_OK


def add_eval_commands(sub: Any) -> None:
    from vmpc.studies.horizons import DEFAULT_CONTROLLERS, DEFAULT_REFERENCE, DEFAULT_SEED

    _, es = add_group(sub, "eval", "closed-loop studies over held-out episodes", "STUDY")
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
        "a table.",
    )
    add_config(h, help="YAML config of the task")
    h.add_argument(
        "--value",
        required=True,
        metavar="PATH",
        help="learned value artifact (inside value.allowed_dirs), used by the "
        "*-learned controllers; its task parameters decide fixed vs held-out "
        "targets",
    )
    h.add_argument("--starts", type=int, default=20, metavar="N", help="held-out episodes")
    h.add_argument(
        "--controllers",
        nargs="+",
        default=list(DEFAULT_CONTROLLERS),
        metavar="T<N>-KIND",
        help="controllers to compare, each T<horizon>-<learned|quadratic|none>",
    )
    h.add_argument(
        "--reference",
        metavar="LABEL",
        help=f"controller the costs and solve times are relative to (default "
        f"{DEFAULT_REFERENCE} if listed, else the longest horizon)",
    )
    h.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="sim time per run [s] (default: run.duration of the config)",
    )
    h.add_argument(
        "--replan-every",
        type=int,
        default=10,
        metavar="K",
        help="sim steps between replans, the same for every controller (10 keeps T=200 affordable)",
    )
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
        "--workers",
        type=int,
        default=n_cores,
        metavar="W",
        help="parallel processes over runs (default: all cores); more workers than "
        "cores inflate the measured solve times",
    )
    h.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="episode seed, drawn from an RNG stream no trainer uses",
    )
    add_set(
        h,
        "override any config value for every run (repeatable); the study's own "
        "settings (horizon, terminal, q0, target, pushes, timing) take precedence",
    )
    add_out(h, None, "output folder (default runs/eval-<date>-<time>)")
    h.add_argument("--no-plots", action="store_true", help="skip horizons.png")
    add_quiet(h)
    h.set_defaults(func=cmd_eval_horizons)
