"""DVP's OCP solves on the shared executors (:mod:`learning.executors`: a local process pool or
a Ray cluster).

Problems are sampled in the parent with the run's seeded RNG and solved deterministically, and
results come back in problem order, so the same seed gives the same dataset on either executor.
Each worker builds its system (and so its Crocoddyl problems) once and reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from mpc.value.artifact import ValueMetadata, ValueModel
from mpc.value.feature_evaluator import needs_features
from mpc.value.terminal import ValueTerminalModel, make_evaluator

from .. import executors as shared
from ..executors import ExecutorError, ExecutorSpec
from .systems import SolveOutcome, System, SystemSpec, TerminalFactory, ZeroTerminal, make_system

__all__ = [
    "Executor",
    "ExecutorError",
    "ExecutorSpec",
    "ValuePayload",
    "make_executor",
    "solve_chunk",
]

# (metadata JSON, weights) of the value ending the horizon, or None for a zero terminal.
ValuePayload = tuple[str, dict[str, np.ndarray]] | None

_SYSTEM_ADAPTER: TypeAdapter[Any] = TypeAdapter(SystemSpec)


def build_system(system_json: str) -> System:
    """A worker's context: the system of the run, built once."""
    return make_system(_SYSTEM_ADAPTER.validate_json(system_json))


def _terminal_factory(system: System, value: ValuePayload) -> tuple[str, TerminalFactory]:
    if value is None:
        return "none", lambda: ZeroTerminal(system.state, system.nu)
    meta_json, arrays = value
    meta = json.loads(meta_json)
    key = meta["weights_sha256"]

    def make() -> ValueTerminalModel:
        model = ValueModel(Path("dvp-iterate"), None, ValueMetadata.model_validate(meta), arrays)
        evaluator = make_evaluator(model, "fast", system.feature_robot)
        if needs_features(model) and system.goal_target is not None:
            evaluator.set_goal(system.goal_target)  # a conditioned value takes it per problem
        return ValueTerminalModel(system.state, system.nu, evaluator)

    return key, make


def solve_chunk(
    rows: np.ndarray,
    horizon: int,
    value: ValuePayload,
    record_nodes: int,
    maxiter: int,
    continuation: int | None = None,
    system: System | None = None,
) -> list[SolveOutcome]:
    assert system is not None, "solve_chunk needs the system"
    key, make = _terminal_factory(system, value)
    return [
        system.solve(row, horizon, key, make, record_nodes, maxiter, continuation) for row in rows
    ]


def _solve_task(
    system: System,
    rows: np.ndarray,
    horizon: int,
    value: ValuePayload,
    record_nodes: int,
    maxiter: int,
    continuation: int | None,
) -> list[SolveOutcome]:
    return solve_chunk(rows, horizon, value, record_nodes, maxiter, continuation, system)


class Executor:
    """DVP's view of a shared executor: :meth:`map` solves problems into value samples."""

    workers: int

    def __init__(self, inner: shared.Executor | None = None) -> None:
        self._inner = inner
        self.workers = inner.workers if inner is not None else 1

    def map(
        self,
        rows: np.ndarray,
        horizon: int,
        value: ValuePayload,
        record_nodes: int,
        maxiter: int,
        on_done: Callable[[int], None] | None = None,
        continuation: int | None = None,
    ) -> list[SolveOutcome]:
        assert self._inner is not None
        return self._inner.run(
            _solve_task, rows, (horizon, value, record_nodes, maxiter, continuation), on_done
        )

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(spec: ExecutorSpec, system_json: str) -> Executor:
    return Executor(shared.make_executor(spec, build_system, system_json))
