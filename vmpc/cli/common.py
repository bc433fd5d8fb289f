"""What every verb of the ``vmpc`` command shares: the default config, exit codes, the common
flags (``--config``, ``--set``, ``--out``, ``-q``) and table printing."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from mpc.errors import VmpcError

__all__ = [
    "DEFAULT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "SubParsers",
    "UsageError",
    "add_config",
    "add_group",
    "add_out",
    "add_quiet",
    "add_set",
    "cores",
    "fmt",
    "print_table",
]

DEFAULT_CONFIG = "configs/iiwa_reach.yaml"
EXIT_OK = 0
EXIT_USAGE = 2  # every user error: one line on stderr, no traceback
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]
SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(VmpcError):
    """A bad combination of flags."""


def add_group(sub: Any, name: str, help: str, metavar: str) -> tuple[argparse.ArgumentParser, Any]:
    """A verb with sub-verbs (``vmpc bench ...``); alone, it prints its help and exits 2."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help()
        return EXIT_USAGE

    p.set_defaults(func=usage)
    return p, p.add_subparsers(dest=f"{name}_command", metavar=metavar)


def add_config(
    p: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG, help: str | None = None
) -> None:
    """``--config``; required when there is no default."""
    text = help or ("YAML config" + (f" (default {default})" if default else ""))
    if default is None:
        p.add_argument("--config", required=True, help=text)
    else:
        p.add_argument("--config", default=default, help=text)


def add_set(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=help
        or "override any config value, e.g. --set ocp.costs.torque_reg=1e-2 "
        "(repeatable; values are YAML)",
    )


def add_out(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    p.add_argument("--out", default=default, help=help)


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar (bars only ever show on a terminal)",
    )


def print_table(rows: Sequence[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def fmt(x: object, unit: str = "", digits: int = 4) -> str:
    if x is None:
        return "never"
    if isinstance(x, float):
        return f"{x:.{digits}g}{unit}"
    return f"{x}{unit}"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
