"""The policy artifact: a warm-start policy u = pi(z), z = [x, theta], as learning/ writes it
and mpc/ loads it. A member of the value artifact's format family (mpc/value/artifact.py): the
same container and the same safety properties, only the metadata and the network differ.

One TorchScript file (``torch.jit.script`` of ``learning.networks.PolicyNet``, then ``save``),
format ``vmpc-policy`` version 2, holding

* ``forward(z_batch) -> u``, the actions, inside the control box by construction;
* in the archive's extra files: ``metadata.json`` (:class:`PolicyMetadata`) and
  ``weights.safetensors`` (the same weights, float64, loadable without running code).

:func:`load_policy_model` opens the file once inside the allowed folders (owned by us or root,
not writable by group or others), reads it with the same size caps as a value, takes only the
metadata and the safetensors weights, and checks them against each other and the hashes
(:func:`mpc.value.artifact.parse_archive`). Nothing of the file ever runs: the policy is
evaluated by :class:`~mpc.policy.evaluator.PolicyEvaluator` (numpy) from the checked weights,
so there is no TorchScript path and no trust manifest to consult. The control box is stored
twice, as the ``u_lb``/``u_ub`` tensors the network squashes into and as ``control_box`` in the
metadata that tools read; a file where they differ is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from sim.specs import Strict

from ..errors import VmpcError
from ..value.artifact import (
    ArchiveKind,
    LoadedArtifact,
    ModuleSha256,
    Provenance,
    StateLayout,
    TrainedWith,
    errors_as,
    mlp_shapes,
    open_allowed,
    parse_archive,
    read_archive_metadata,
)
from .evaluator import PolicyEvaluator

__all__ = [
    "POLICY_ARCHIVE",
    "POLICY_FORMAT",
    "POLICY_FORMAT_VERSION",
    "ControlBox",
    "PolicyArchitecture",
    "PolicyMetadata",
    "PolicyModel",
    "PolicyModelError",
    "load_policy_model",
    "parse_policy",
    "read_policy_metadata",
]

POLICY_FORMAT = "vmpc-policy"
POLICY_FORMAT_VERSION = 2  # the container's version: the same as the values'


class PolicyModelError(VmpcError):
    """A policy file cannot be used; the message names the file and says why in one line."""


class PolicyArchitecture(Strict):
    kind: Literal["mlp"] = "mlp"
    n_in: int = Field(gt=0, description="input width: state + task parameters")
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        max_length=64, description="hidden layer widths"
    )
    nu: int = Field(gt=0, description="output width: the controls")
    activation: Literal["relu", "tanh"] = "relu"


class ControlBox(Strict):
    """The box [u_lb, u_ub] every action lies in (the network's output is a scaled tanh).
    Finite by the Strict base, which refuses inf and NaN."""

    u_lb: list[float] = Field(min_length=1, description="lower control bounds [control units]")
    u_ub: list[float] = Field(min_length=1, description="upper control bounds [control units]")

    @model_validator(mode="after")
    def _a_box(self) -> ControlBox:
        if len(self.u_lb) != len(self.u_ub):
            raise ValueError(f"u_lb has {len(self.u_lb)} entries, u_ub {len(self.u_ub)}")
        if not all(lo < hi for lo, hi in zip(self.u_lb, self.u_ub, strict=True)):
            raise ValueError(f"u_lb must be below u_ub entrywise, got {self.u_lb} and {self.u_ub}")
        return self


class PolicyMetadata(Strict):
    """metadata.json of a policy file: the network, the box it acts in, the state and task it
    takes, what it was trained on and by what, and the hashes that tie it to the weights."""

    format: Literal["vmpc-policy"] = "vmpc-policy"
    format_version: int = POLICY_FORMAT_VERSION
    architecture: PolicyArchitecture
    control_box: ControlBox
    state: StateLayout
    task_params: list[str] = Field(default_factory=list)
    task_fingerprint: str = Field(
        description="mpc.value.artifact.task_fingerprint of the task the policy was trained on"
    )
    trained: TrainedWith = Field(default_factory=TrainedWith)
    provenance: Provenance
    weights_sha256: str
    module_sha256: ModuleSha256 = None


def _expected_shapes(meta: PolicyMetadata) -> dict[str, tuple[int, ...]]:
    """The tensors of a ``PolicyNet`` with ``meta``'s architecture: an MLP plus the box."""
    a = meta.architecture
    return {**mlp_shapes(a.n_in, a.hidden, a.nu), "u_lb": (a.nu,), "u_ub": (a.nu,)}


POLICY_ARCHIVE: ArchiveKind[PolicyMetadata] = ArchiveKind(
    format=POLICY_FORMAT,
    version=POLICY_FORMAT_VERSION,
    validate=PolicyMetadata.model_validate,
    expected_shapes=_expected_shapes,
    error=PolicyModelError,
)


@dataclass
class PolicyModel(LoadedArtifact):
    """A loaded, integrity-checked policy: metadata and float64 weights, nothing executable;
    ``model_id`` (``file@weights-hash``) and ``nx`` as for a value."""

    path: Path
    metadata: PolicyMetadata
    arrays: dict[str, np.ndarray] = field(repr=False)  # float64 weights, by state-dict name
    file_sha256: str = ""

    @property
    def nu(self) -> int:
        return self.metadata.architecture.nu

    def evaluator(self) -> PolicyEvaluator:
        """pi(z) and d pi/dz in numpy from the checked weights (a fresh one per call)."""
        return PolicyEvaluator(self.arrays, self.metadata.architecture.activation)


def read_policy_metadata(path: str | Path) -> PolicyMetadata:
    """A policy file's metadata, read from the zip without executing anything and without the
    allowed-folder checks (what ``vmpc policy inspect`` shows)."""
    return read_archive_metadata(path, POLICY_ARCHIVE)


def parse_policy(blob: bytes, path: str | Path) -> PolicyModel:
    """Check a policy file's bytes and take its metadata and weights; runs nothing. On top of
    the container checks: the input width is the state's plus the task parameters', and the
    control box the network squashes into is the metadata's."""
    meta, arrays = parse_archive(blob, path, POLICY_ARCHIVE)
    a, box = meta.architecture, meta.control_box
    if a.n_in != meta.state.nx + len(meta.task_params):
        raise PolicyModelError(
            f"{path}: input width {a.n_in} != state {meta.state.nx} + "
            f"{len(meta.task_params)} task parameters"
        )
    if len(box.u_lb) != a.nu:
        raise PolicyModelError(
            f"{path}: control_box has {len(box.u_lb)} entries, the network {a.nu} outputs"
        )
    for name, stored in (("u_lb", box.u_lb), ("u_ub", box.u_ub)):
        if not np.array_equal(arrays[name], np.asarray(stored, dtype=np.float64)):
            raise PolicyModelError(
                f"{path}: the network's {name} {np.round(arrays[name], 6).tolist()} is not the "
                f"metadata's control_box.{name} {stored} (edited?)"
            )
    return PolicyModel(Path(path), meta, arrays, hashlib.sha256(blob).hexdigest())


def load_policy_model(
    path: str | Path,
    allowed_dirs: Sequence[str | Path],
    base: Path | Sequence[Path] | None = None,
) -> PolicyModel:
    """Load a policy file from an allowed folder (relative entries resolve against ``base``,
    default the working directory) with the value artifact's folder, owner, mode and size
    checks, and check it is whole and self-consistent, without running any of it."""
    with errors_as(PolicyModelError):
        _, blob = open_allowed(path, allowed_dirs, base)
    return parse_policy(blob, path)
