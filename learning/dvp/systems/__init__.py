"""Systems DVP learns values for. Each is a config section (:mod:`.specs`) plus a small adapter
that builds its Crocoddyl problem once, samples problems, and solves one problem into value
samples (:class:`~.base.System`). Toys in :mod:`.toys`, the arm in :mod:`.arm`, the Crocoddyl
models they need in :mod:`.croc`."""

from __future__ import annotations

from .arm import ArmSystem
from .base import SolveOutcome, System, TerminalFactory
from .croc import JointSubsetActuation, ZeroTerminal
from .specs import (
    SYSTEM_KINDS,
    ArmSpec,
    CartpoleSpec,
    DoublePendulumSpec,
    PendulumSpec,
    SystemSpec,
    UnicycleSpec,
)
from .toys import Cartpole, DoublePendulum, Pendulum, Unicycle

__all__ = [
    "SYSTEM_KINDS",
    "ArmSpec",
    "ArmSystem",
    "Cartpole",
    "CartpoleSpec",
    "DoublePendulum",
    "DoublePendulumSpec",
    "JointSubsetActuation",
    "Pendulum",
    "PendulumSpec",
    "SolveOutcome",
    "System",
    "SystemSpec",
    "TerminalFactory",
    "Unicycle",
    "UnicycleSpec",
    "ZeroTerminal",
    "make_system",
]

_KINDS: dict[str, type[System]] = {
    "pendulum": Pendulum,
    "double_pendulum": DoublePendulum,
    "cartpole": Cartpole,
    "unicycle": Unicycle,
    "arm": ArmSystem,
}


def make_system(
    spec: PendulumSpec | DoublePendulumSpec | CartpoleSpec | UnicycleSpec | ArmSpec,
) -> System:
    return _KINDS[spec.kind](spec)  # type: ignore[call-arg]
