"""The extended replay buffer (Schramm Alg. 1, steps 4-5): transitions with the dynamics
Jacobians and reward gradients computed once when they were collected."""

from __future__ import annotations

import numpy as np
import torch

from .targets import Batch

__all__ = ["REPLAY_KEYS", "ReplayBuffer"]

REPLAY_KEYS = ("s", "a", "r", "s2", "done", "f_x", "f_u", "r_x", "r_u")


class ReplayBuffer:
    """Preallocated float64 arrays; ``chunk_since(n)`` hands the rows added after n to a
    checkpoint, and ``extend`` puts them back on resume."""

    def __init__(self, capacity: int, nx: int, nu: int) -> None:
        shapes = {
            "s": (nx,),
            "a": (nu,),
            "r": (),
            "s2": (nx,),
            "done": (),
            "f_x": (nx, nx),
            "f_u": (nx, nu),
            "r_x": (nx,),
            "r_u": (nu,),
        }
        self._data = {k: np.zeros((capacity, *shape)) for k, shape in shapes.items()}
        self.capacity, self.size = capacity, 0

    def add(self, **row: np.ndarray | float) -> None:
        if self.size >= self.capacity:
            raise IndexError(f"replay buffer full ({self.capacity} transitions)")
        for k, v in row.items():
            self._data[k][self.size] = v
        self.size += 1

    def extend(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows["s"])
        if self.size + n > self.capacity:
            raise IndexError(f"replay buffer full ({self.capacity} transitions)")
        for k in REPLAY_KEYS:
            self._data[k][self.size : self.size + n] = rows[k]
        self.size += n

    def chunk_since(self, start: int) -> dict[str, np.ndarray]:
        return {k: v[start : self.size].copy() for k, v in self._data.items()}

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        idx = rng.integers(0, self.size, n)
        t = {k: torch.as_tensor(v[idx], dtype=torch.float32) for k, v in self._data.items()}
        return Batch(**t)
