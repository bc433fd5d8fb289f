"""``vmpc train dvp``: offline value learning (the algorithm lives in learning/dvp/)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import EXIT_OK, UsageError, add_config, add_group, add_out, add_quiet, add_set

__all__ = ["add_train_commands"]


def cmd_train_dvp(args: argparse.Namespace) -> int:
    import yaml

    from learning.dvp.config import load_dvp_config
    from learning.dvp.trainer import train_dvp

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
        raise UsageError("--resume needs --out (the run folder to continue)")
    else:
        out = Path("runs") / time.strftime(f"dvp-{cfg.system.kind}-%Y%m%d-%H%M%S")
    result = train_dvp(
        cfg,
        out,
        resume=args.resume,
        progress=not args.quiet,
        export=Path(args.export) if args.export else None,
        config_text=yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        log=lambda line: print(line, flush=True),
    )
    last = result.metrics[-1]
    print(
        f"vmpc train dvp: {cfg.system.kind}, {len(result.metrics)} iterations -> {result.artifact}"
    )
    print(
        f"  value rel. error {last['value_rel_error']:.3%}, gradient rel. error "
        f"{last['grad_rel_error']:.3%}, Bellman residual {last['bellman_residual']:.2e}"
    )
    print(
        f"  {sum(m['solves'] for m in result.metrics)} OCP solves "
        f"({sum(m['rejected'] for m in result.metrics)} rejected), "
        f"{sum(m['iteration_s'] for m in result.metrics):.0f} s; metrics.csv and plots in {out}"
    )
    if args.export:
        print(f"  exported {args.export}")
    return EXIT_OK


def add_train_commands(sub: Any) -> None:
    _, ts = add_group(sub, "train", "offline training of terminal values", "ALGORITHM")
    d = ts.add_parser(
        "dvp",
        help="Differential Value Programming with Sobolev regression",
        description="Trains a value by DVP (Parag et al. 2022): solve N OCPs ending in the "
        "previous value, Sobolev-fit the next one, repeat. Writes config.yaml, "
        "metrics.csv, convergence plots, atomic per-iteration checkpoints and the "
        "TorchScript artifact value.pt into the run folder.",
    )
    add_config(d, None, "DVP config, e.g. configs/dvp_iiwa.yaml")
    add_out(d, None, "run folder (default runs/dvp-<system>-<date>)")
    d.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out after a kill: same config (only executor.* and "
        "dvp.iterations may change), damaged checkpoints fall back to the last intact iteration",
    )
    d.add_argument("--executor", choices=["local", "ray"], help="executor.kind")
    d.add_argument("--address", help="Ray cluster address (executor.address)")
    d.add_argument("--workers", type=int, help="solver processes (executor.workers)")
    d.add_argument("--export", help="also write the artifact here, e.g. models/iiwa_dvp.pt")
    add_set(d)
    add_quiet(d)
    d.set_defaults(func=cmd_train_dvp)
