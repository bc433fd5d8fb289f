"""Write a trained value network as the TorchScript artifact mpc loads (see mpc.value.artifact).

:func:`build_metadata` is the one place an artifact's metadata is put together, for the file
and for the in-memory payloads DVP ships to its workers.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import io
import subprocess
import time
from pathlib import Path

import torch

from mpc.io import atomic_write_bytes
from mpc.value.artifact import (
    METADATA_FILE,
    Architecture,
    Provenance,
    StateLayout,
    TrainedWith,
    ValueMetadata,
    quiet_torchscript,
    weights_sha256,
)

from .networks import ValueNet

__all__ = ["build_metadata", "export_value", "git_commit", "library_versions"]


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("value-mpc", "torch", "numpy", "crocoddyl", "pin", "pybullet"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """HEAD of the checkout this package runs from, '+dirty' if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_metadata(
    net: ValueNet,
    *,
    state: StateLayout,
    task_params: list[str],
    task_fingerprint: str,
    algorithm: str,
    trained: TrainedWith | None = None,
    iterations: int | None = None,
    samples: int | None = None,
    notes: str = "",
) -> ValueMetadata:
    """The metadata of ``net`` as an artifact: architecture, state layout, task, provenance and
    the hash of its weights."""
    arrays = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    meta = ValueMetadata(
        architecture=Architecture(
            kind=net.kind,  # type: ignore[arg-type]  # Final[str] for TorchScript; validated here
            n_in=net.n_in,
            hidden=net.hidden,
            residual_dim=net.residual_dim,
        ),
        state=state,
        task_params=list(task_params),
        task_fingerprint=task_fingerprint,
        trained=trained or TrainedWith(),
        provenance=Provenance(
            algorithm=algorithm,
            iterations=iterations,
            samples=samples,
            date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            library_versions=library_versions(),
            git_commit=git_commit(),
            notes=notes,
        ),
        weights_sha256=weights_sha256(arrays),
    )
    if meta.architecture.n_in != state.nx + len(task_params):
        raise ValueError(
            f"network input {meta.architecture.n_in} != nx {state.nx} + "
            f"{len(task_params)} task parameters"
        )
    return meta


def export_value(
    net: ValueNet,
    path: str | Path,
    *,
    state: StateLayout,
    task_params: list[str],
    task_fingerprint: str,
    algorithm: str,
    trained: TrainedWith | None = None,
    iterations: int | None = None,
    samples: int | None = None,
    notes: str = "",
) -> ValueMetadata:
    """Script ``net`` (as float64), attach metadata, and save atomically to ``path``."""
    net = copy.deepcopy(net).double().eval()
    meta = build_metadata(
        net,
        state=state,
        task_params=task_params,
        task_fingerprint=task_fingerprint,
        algorithm=algorithm,
        trained=trained,
        iterations=iterations,
        samples=samples,
        notes=notes,
    )
    buf = io.BytesIO()
    with quiet_torchscript():
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, buf, _extra_files={METADATA_FILE: meta.model_dump_json(indent=1)})
    atomic_write_bytes(Path(path), buf.getvalue())
    return meta
