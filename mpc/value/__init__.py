"""Learned terminal values: the artifact contract (:mod:`.artifact`, written by :mod:`learning`)
and the Crocoddyl terminal model that evaluates it (:mod:`.terminal`)."""

from .artifact import (
    TARGET_PARAMS,
    StateLayout,
    TrainedWith,
    ValueMetadata,
    ValueModel,
    ValueModelError,
    load_value_model,
    read_metadata,
    task_fingerprint,
)
from .terminal import (
    LearnedValueTerminal,
    ValueTerminalModel,
    make_evaluator,
    prepare_value_terminal,
)

__all__ = [
    "TARGET_PARAMS",
    "LearnedValueTerminal",
    "StateLayout",
    "TrainedWith",
    "ValueMetadata",
    "ValueModel",
    "ValueModelError",
    "ValueTerminalModel",
    "load_value_model",
    "make_evaluator",
    "prepare_value_terminal",
    "read_metadata",
    "task_fingerprint",
]
