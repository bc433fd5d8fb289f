"""DVP's ground truth: what a value is measured against, in training, benches and value maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .config import DVPConfig
from .executors import Executor
from .systems import SolveOutcome

__all__ = ["map_ground_truth"]


def map_ground_truth(
    executor: Executor,
    rows: np.ndarray,
    cfg: DVPConfig,
    record_nodes: int,
    on_done: Callable[[int], None] | None = None,
) -> list[SolveOutcome]:
    """Ground truth: converged solves of validation.horizon_factor x T with no terminal cost,
    each also started from the T-horizon solution (see :meth:`System.solve`)."""
    T = cfg.dvp.horizon
    return executor.map(
        rows,
        cfg.validation.horizon_factor * T,
        None,
        record_nodes,
        cfg.validation.maxiter,
        on_done,
        continuation=T,
    )
