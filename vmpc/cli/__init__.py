"""``vmpc``: the command line of value-mpc.

One module per verb group (:mod:`.sim`, :mod:`.value`, :mod:`.policy`, :mod:`.train`,
:mod:`.eval`, :mod:`.bench`, :mod:`.bridge` clients, :mod:`.keys`); :mod:`.common` holds what
they share. Every user error (bad config, missing file, no display, ...) is one line on stderr
and exit code 2; no tracebacks for mistakes a user can fix. Verbs import the robotics stack
when they run, so ``vmpc --help`` and the bridge clients start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mpc.errors import VmpcError
from sim.errors import SimError

from .bench import add_bench_commands
from .bridge import add_bridge_commands
from .common import EXIT_INTERRUPTED, EXIT_USAGE
from .eval import add_eval_commands
from .keys import add_keys_commands
from .policy import add_policy_commands
from .sim import add_sim_commands
from .train import add_train_commands
from .value import add_value_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmpc",
        description="Model-predictive control with learned terminal values: Crocoddyl FDDP on a "
        "torque-controlled arm simulated in PyBullet.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_sim_commands(sub)
    add_bench_commands(sub)
    add_value_commands(sub)
    add_policy_commands(sub)
    add_eval_commands(sub)
    add_train_commands(sub)
    add_bridge_commands(sub)
    add_keys_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except (VmpcError, SimError) as exc:
        print(f"vmpc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmpc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
