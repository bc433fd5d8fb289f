"""Atomic per-iteration checkpoints of a training run, and resuming from them.

Layout of a run folder::

    state.json                 {"completed": n, ...}, rewritten atomically last
    checkpoints/validation.npz held-out problems and their ground truth (computed once)
    checkpoints/iter_0003/     dataset.npz, model.pt, optim.pt, rng.json, metrics.json

An iteration's folder is written as ``iter_0003.tmp`` and renamed when complete, then
``state.json`` moves forward: a kill at any point loses at most the iteration in progress, which
``--resume`` redoes from the same RNG state, so nothing is lost or duplicated. Tensors are
written with ``torch.save`` and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpc.io import atomic_write_bytes, atomic_write_text, fsync_dir

__all__ = ["RunFolder"]


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ckpt = self.root / "checkpoints"
        self.ckpt.mkdir(parents=True, exist_ok=True)
        for stale in self.ckpt.glob("*.tmp"):  # an iteration a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)

    # -- progress ---------------------------------------------------------------------------------
    def completed(self) -> int:
        state = self.root / "state.json"
        return json.loads(state.read_text())["completed"] if state.exists() else 0

    def save_iteration(
        self,
        n: int,
        *,
        dataset: dict[str, np.ndarray],
        model: dict,
        optim: dict,
        rng: dict,
        torch_rng: torch.Tensor,
        metrics: dict[str, Any],
    ) -> None:
        final = self.ckpt / f"iter_{n:04d}"
        tmp = self.ckpt / f"iter_{n:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        buf = io.BytesIO()
        np.savez_compressed(buf, **dataset)  # type: ignore[arg-type]  # numpy's stub: **kwds could hold allow_pickle
        atomic_write_bytes(tmp / "dataset.npz", buf.getvalue())
        atomic_write_bytes(tmp / "model.pt", _torch_bytes(model))
        atomic_write_bytes(tmp / "optim.pt", _torch_bytes(optim))
        atomic_write_bytes(tmp / "torch_rng.pt", _torch_bytes(torch_rng))
        atomic_write_text(tmp / "rng.json", json.dumps(rng))
        atomic_write_text(tmp / "metrics.json", json.dumps(metrics))
        fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(self.ckpt)
        atomic_write_text(self.root / "state.json", json.dumps({"completed": n + 1}))

    def load_iteration(self, n: int) -> dict[str, Any]:
        d = self.ckpt / f"iter_{n:04d}"
        load = lambda p: torch.load(io.BytesIO(p.read_bytes()), weights_only=True)  # noqa: E731
        with np.load(d / "dataset.npz") as data:
            dataset = {k: data[k] for k in data.files}
        return {
            "dataset": dataset,
            "model": load(d / "model.pt"),
            "optim": load(d / "optim.pt"),
            "torch_rng": load(d / "torch_rng.pt"),
            "rng": json.loads((d / "rng.json").read_text()),
            "metrics": json.loads((d / "metrics.json").read_text()),
        }

    # -- validation set ---------------------------------------------------------------------------
    def save_validation(self, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds could hold allow_pickle
        atomic_write_bytes(self.ckpt / "validation.npz", buf.getvalue())

    def load_validation(self) -> dict[str, np.ndarray] | None:
        path = self.ckpt / "validation.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
