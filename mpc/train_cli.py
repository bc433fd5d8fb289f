"""``vmpc train dvp``: offline value learning (the algorithm lives in learning/dvp.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_train_commands", "add_sobolev_bench", "add_dvp_bench"]


def cmd_train_dvp(args: argparse.Namespace) -> int:
    import yaml

    from learning.dvp import train_dvp
    from learning.dvp_config import load_dvp_config

    overrides = list(args.set or [])
    if args.executor:
        overrides.append(f"executor.kind={args.executor}")
    if args.address:
        overrides.append(f"executor.address={args.address}")
    if args.workers:
        overrides.append(f"executor.workers={args.workers}")
    cfg = load_dvp_config(args.config, overrides)
    if args.out:
        out = Path(args.out)
    elif args.resume:
        raise SystemExit("vmpc: error: --resume needs --out (the run folder to continue)")
    else:
        out = Path("runs") / time.strftime(f"dvp-{cfg.system.kind}-%Y%m%d-%H%M%S")
    result = train_dvp(cfg, out, resume=args.resume, progress=not args.quiet,
                       export=Path(args.export) if args.export else None,
                       config_text=yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    last = result.metrics[-1]
    print(f"vmpc train dvp: {cfg.system.kind}, {len(result.metrics)} iterations -> {result.artifact}")
    print(f"  value rel. error {last['value_rel_error']:.3%}, gradient rel. error "
          f"{last['grad_rel_error']:.3%}, Bellman residual {last['bellman_residual']:.2e}")
    print(f"  {sum(m['solves'] for m in result.metrics)} OCP solves "
          f"({sum(m['rejected'] for m in result.metrics)} rejected), "
          f"{sum(m['iteration_s'] for m in result.metrics):.0f} s; metrics.csv and plots in {out}")
    if args.export:
        print(f"  exported {args.export}")
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="offline training of terminal values")
    t.set_defaults(func=lambda _a: (t.print_help(), 2)[1])
    ts = t.add_subparsers(dest="train_cmd", metavar="ALGORITHM")
    d = ts.add_parser(
        "dvp", help="Differential Value Programming with Sobolev regression",
        description="Trains a value by DVP (Parag et al. 2022): solve N OCPs ending in the "
                    "previous value, Sobolev-fit the next one, repeat. Writes config.yaml, "
                    "metrics.csv, convergence plots, atomic per-iteration checkpoints and the "
                    "TorchScript artifact value.pt into the run folder.")
    d.add_argument("--config", required=True, help="DVP config, e.g. configs/dvp_iiwa.yaml")
    d.add_argument("--out", help="run folder (default runs/dvp-<system>-<date>)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    d.add_argument("--executor", choices=["local", "ray"], help="executor.kind")
    d.add_argument("--address", help="Ray cluster address (executor.address)")
    d.add_argument("--workers", type=int, help="solver processes (executor.workers)")
    d.add_argument("--export", help="also write the artifact here, e.g. models/iiwa_dvp.pt")
    d.add_argument("--set", action="append", metavar="KEY=VALUE")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_train_dvp)


def cmd_bench_sobolev(args: argparse.Namespace) -> int:
    from learning.dvp_config import load_dvp_config
    from learning.sobolev_bench import bench_sobolev

    cfg = load_dvp_config(args.config, args.set or [])
    bench_sobolev(cfg, args.sizes, args.steps, Path(args.out), progress=not args.quiet)
    return 0


def add_sobolev_bench(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser(
        "sobolev", help="samples Sobolev regression needs vs plain regression",
        description="Fits the value of a DVP config's system on growing sets of ground-truth "
                    "samples, with and without the gradient term, at equal gradient steps, and "
                    "reports the held-out value error of each and the sample ratio.")
    b.add_argument("--config", required=True, help="a DVP config, e.g. configs/dvp_pendulum.yaml")
    b.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800, 1600, 3200])
    b.add_argument("--steps", type=int, default=1500, help="gradient steps per fit")
    b.add_argument("--set", action="append", metavar="KEY=VALUE")
    b.add_argument("--out", default="runs/bench")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=cmd_bench_sobolev)


def cmd_bench_dvp(args: argparse.Namespace) -> int:
    from learning.dvp_config import load_dvp_config
    from learning.throughput_bench import bench_throughput

    cfg = load_dvp_config(args.config, args.set or [])
    settings = [(kind, w) for kind in args.executors for w in args.workers]
    bench_throughput(cfg, args.samples, settings, Path(args.out))
    return 0


def add_dvp_bench(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser(
        "dvp", help="DVP data generation: OCP solves per second per executor and worker count",
        description="Solves the same sampled problems of a DVP config on each executor and "
                    "worker count (after a warm-up), and prints OCP/s and the speed-up over one "
                    "worker.")
    b.add_argument("--config", required=True)
    b.add_argument("--samples", type=int, default=200)
    b.add_argument("--executors", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    b.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    b.add_argument("--set", action="append", metavar="KEY=VALUE")
    b.add_argument("--out", default="runs/bench")
    b.set_defaults(func=cmd_bench_dvp)
