"""The OC phase of PLAL on each executor and worker count: one iteration's solves (the
consensus term through a policy, the expensive mode) measured side by side on the same problems.
The paper's time target is about this phase; the issue wants >= 1.7x on 2 workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.executors import make_executor
from learning.networks import PolicyNet
from learning.plal.config import PLALConfig
from learning.plal.oc_phase import OCJob, build_worker, solve_task
from learning.plal.systems import make_family
from learning.plal.trainer import policy_arrays, still_job

from .dvp import ThroughputResult, measure_executors, write_result

__all__ = ["bench_oc_phase"]


def _solve_rows(worker: Any, idx: np.ndarray, job: OCJob) -> list[Any]:
    return solve_task(worker, idx[:, 0].astype(int), job)


def bench_oc_phase(
    cfg: PLALConfig, samples: int, settings: list[tuple[str, int]], out: Path
) -> ThroughputResult:
    """PLAL's OC phase (policy mode, a seeded random policy, the still guess) of ``samples``
    problems per (executor, workers); writes ``out/bench_plal_<system>.json``."""
    family = make_family(cfg.system, cfg.problems.terminal_weight)
    T = cfg.problems.horizon
    rows = family.sample(samples, np.random.default_rng(cfg.seed))
    torch.manual_seed(cfg.seed)
    lb, ub = family.control_box()
    net = PolicyNet(
        family.nx + len(family.task_params),
        lb.tolist(),
        ub.tolist(),
        cfg.policy.hidden,
        cfg.policy.activation,
    ).double()
    job = still_job(family, rows, T, cfg.problems.maxiter)
    job.mode, job.mu = "policy", cfg.algorithm.mu
    job.lam = np.zeros((len(rows), T, family.nu))
    job.policy = (policy_arrays(net), net.activation)
    context = json.dumps(
        {
            "system": cfg.system.model_dump(mode="json"),
            "terminal_weight": cfg.problems.terminal_weight,
        }
    )
    idx = np.arange(len(rows), dtype=float)[:, None]

    def solve(ex: Any, warm_up: bool) -> list[bool]:
        part = idx[: 4 * ex.workers] if warm_up else idx
        return [r.ok for r in ex.run(_solve_rows, part, (job,))]

    measured = measure_executors(
        settings, lambda spec: make_executor(spec, build_worker, context), solve
    )
    return write_result(family.name, samples, T, measured, out / f"bench_plal_{family.name}.json")
