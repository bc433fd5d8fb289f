"""Learned terminal values: the artifact contract (:mod:`.artifact`, written by :mod:`learning`)
and the Crocoddyl terminal model that evaluates it (:mod:`.terminal`)."""

from .artifact import (
    FORMAT_VERSION,
    TARGET_PARAMS,
    TRUST_MANIFEST,
    StateLayout,
    TrainedWith,
    ValueMetadata,
    ValueModel,
    ValueModelError,
    file_sha256,
    load_value_model,
    read_metadata,
    read_trusted,
    task_fingerprint,
)
from .terminal import (
    LearnedValueTerminal,
    ValueTerminalModel,
    make_evaluator,
    prepare_value_terminal,
    value_bases,
)

__all__ = [
    "FORMAT_VERSION",
    "TARGET_PARAMS",
    "TRUST_MANIFEST",
    "LearnedValueTerminal",
    "StateLayout",
    "TrainedWith",
    "ValueMetadata",
    "ValueModel",
    "ValueModelError",
    "ValueTerminalModel",
    "file_sha256",
    "load_value_model",
    "make_evaluator",
    "prepare_value_terminal",
    "read_metadata",
    "read_trusted",
    "task_fingerprint",
    "value_bases",
]
