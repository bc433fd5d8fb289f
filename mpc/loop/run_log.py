"""Everything a closed-loop run records, in arrays allocated once before the loop starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes

__all__ = ["RunLog"]


@dataclass
class RunLog:
    """Per-step arrays (length ``steps``) and per-replan arrays (length ``replans``)."""

    nq: int
    capacity: int
    replan_capacity: int
    t: np.ndarray = field(init=False)  # [s]
    q: np.ndarray = field(init=False)  # [rad] true state
    v: np.ndarray = field(init=False)  # [rad/s]
    tau: np.ndarray = field(init=False)  # [N m] commanded, after clamping
    ee_position: np.ndarray = field(init=False)  # [m] world, from the simulator
    target: np.ndarray = field(init=False)  # [m] world
    force: np.ndarray = field(init=False)  # [N] world, sum of active pushes
    torque: np.ndarray = field(init=False)  # [N m] world
    replan_t: np.ndarray = field(init=False)
    solve_ms: np.ndarray = field(init=False)
    iterations: np.ndarray = field(init=False)
    cost: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    steps: int = 0
    replans: int = 0

    def __post_init__(self) -> None:
        n, m, nq = self.capacity, self.replan_capacity, self.nq
        self.t = np.zeros(n)
        self.q, self.v, self.tau = np.zeros((n, nq)), np.zeros((n, nq)), np.zeros((n, nq))
        self.ee_position, self.target = np.zeros((n, 3)), np.zeros((n, 3))
        self.force, self.torque = np.zeros((n, 3)), np.zeros((n, 3))
        self.replan_t, self.solve_ms = np.zeros(m), np.zeros(m)
        self.iterations, self.status = np.zeros(m, dtype=np.int32), np.zeros(m, dtype=np.int8)
        self.cost = np.zeros(m)

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled part of every array."""
        n, m = self.steps, self.replans
        per_step = ("t", "q", "v", "tau", "ee_position", "target", "force", "torque")
        per_replan = ("replan_t", "solve_ms", "iterations", "cost", "status")
        out = {k: getattr(self, k)[:n] for k in per_step}
        out.update({k: getattr(self, k)[:m] for k in per_replan})
        return out

    def save(self, path: Path, pushes: np.ndarray, joint_names: list[str]) -> None:
        """``pushes`` rows: start [s], duration [s], link index, force xyz [N], torque xyz [N m]."""
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **self.arrays(), pushes=pushes, joint_names=np.array(joint_names))  # type: ignore[arg-type]  # numpy's stub: **kwds could hold allow_pickle
        atomic_write_bytes(path, buf.getvalue())
