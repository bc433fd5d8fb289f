"""The OC phase of PLAL on each executor and worker count: one iteration's solves (the
consensus term through a policy, the expensive mode) measured side by side on the same problems.
The paper's time target is about this phase; the issue wants >= 1.7x on 2 workers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.executors import make_executor
from learning.networks import PolicyNet
from learning.plal.config import PLALConfig
from learning.plal.oc_phase import build_worker, run_job, worker_context
from learning.plal.systems import make_family
from learning.plal.trainer import policy_arrays, still_job

from .dvp import ThroughputResult, measure_executors, write_result

__all__ = ["bench_oc_phase"]


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

    def solve(ex: Any, warm_up: bool) -> list[bool]:
        part = job if not warm_up else replace(job, rows=job.rows[: 4 * ex.workers])
        return [r.ok for r in run_job(ex, part)]

    context = worker_context(cfg)
    measured = measure_executors(
        settings, lambda spec: make_executor(spec, build_worker, context), solve
    )
    return write_result(family.name, samples, T, measured, out / f"bench_plal_{family.name}.json")
