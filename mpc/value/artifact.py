"""The value-model artifact: the contract between learning/ (which writes it) and mpc/ (which
loads it).

One TorchScript file (``torch.jit.script`` then ``save``) holding

* ``forward(z_batch) -> V`` with z = [x, theta] (state, then task parameters),
* ``value_and_derivatives(z) -> (V, V_z, V_zz)`` for one input, analytic, float64,
* ``metadata.json`` in the archive's extra files (:class:`ValueMetadata`).

TorchScript is executable code: :func:`load_value_model` only opens files inside the allowed
folders. :func:`read_metadata` reads the JSON straight from the zip without running anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from sim.specs import Strict, resolve_urdf

from ..errors import VmpcError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "TARGET_PARAMS",
    "Architecture",
    "Provenance",
    "StateLayout",
    "TrainedWith",
    "ValueMetadata",
    "ValueModel",
    "ValueModelError",
    "allowed_real_path",
    "check_allowed_path",
    "load_value_model",
    "quiet_torchscript",
    "read_metadata",
    "task_fingerprint",
    "weights_sha256",
]

FORMAT = "vmpc-value"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
TARGET_PARAMS = ("target_x", "target_y", "target_z")  # EE target [m], world frame


class ValueModelError(VmpcError):
    """A value-model file cannot be used; the message says why in one line."""


class Architecture(Strict):
    kind: Literal["residual", "feedforward"]
    n_in: int = Field(gt=0, description="input width: state dimension + task parameters")
    hidden: list[int] = Field(min_length=1)
    residual_dim: int | None = Field(default=None, gt=0, description="width of r(z)")
    activation: Literal["tanh"] = "tanh"


class StateLayout(Strict):
    robot: str
    joint_names: list[str]
    nx: int = Field(gt=0)
    layout: Literal["q,v", "vector"] = "q,v"


class TrainedWith(Strict):
    dt: float | None = Field(default=None, description="knot spacing of the training OCP [s]")
    horizon: int | None = Field(default=None, description="knots of the training OCP")
    task_box: tuple[list[float], list[float]] | None = Field(
        default=None,
        description="(min, max) of the task parameters trained on, e.g. the EE "
        "target box [m] of a target-conditioned value",
    )


class Provenance(Strict):
    algorithm: str
    iterations: int | None = None
    samples: int | None = None
    date: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    notes: str = ""


class ValueMetadata(Strict):
    format: Literal["vmpc-value"] = "vmpc-value"
    format_version: int = FORMAT_VERSION
    architecture: Architecture
    state: StateLayout
    task_params: list[str] = Field(default_factory=list)
    task_fingerprint: str
    trained: TrainedWith = Field(default_factory=TrainedWith)
    provenance: Provenance
    weights_sha256: str

    @property
    def target_conditioned(self) -> bool:
        """Whether the value takes the EE target as input (``task_params`` = TARGET_PARAMS)."""
        return list(self.task_params) == list(TARGET_PARAMS)


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """torch 2.13 deprecates TorchScript with a DeprecationWarning on every script/save/load;
    silence exactly those, only around our own calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            category=DeprecationWarning,
            message=r"`torch\.jit\.(script|save|load)` is deprecated",
        )
        yield


def weights_sha256(arrays: Mapping[str, Any]) -> str:
    """Hash of named tensors/arrays (name, dtype, shape, float64 bytes), order-independent."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name], dtype=np.float64))
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def task_fingerprint(cfg: Any, task_params: Sequence[str] = ()) -> str:
    """sha256 of everything that defines the cost-to-go a value is trained for: the robot and
    its URDF, the dynamics options, the running cost, and the target unless it is an input."""
    urdf = resolve_urdf(cfg.robot.urdf, cfg.base_dir)
    conditioned_on_target = set(TARGET_PARAMS) <= set(task_params)
    definition = {
        "robot": {
            "name": cfg.robot.name,
            "urdf_sha256": hashlib.sha256(urdf.read_bytes()).hexdigest(),
            "ee_frame": cfg.robot.ee_frame,
            "ee_offset": cfg.robot.ee_offset,
            "locked_joints": cfg.robot.locked_joints,
            "torque_limits": cfg.robot.torque_limits,
            "posture": cfg.robot.posture,
        },
        "ocp": {
            "dt": cfg.ocp.dt,
            "integrator": cfg.ocp.integrator,
            "armature": cfg.ocp.armature,
            "torque_bounds": cfg.ocp.torque_bounds,
            "costs": cfg.ocp.costs.model_dump(mode="json"),
        },
        "target": None if conditioned_on_target else cfg.task.target,
    }
    blob = json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def allowed_real_path(
    path: str | Path, allowed_dirs: Sequence[str | Path], base: Path | None = None
) -> Path | None:
    """The real path of ``path`` (symlinks and '..' resolved) if it lies inside one of
    ``allowed_dirs``, else None. The one folder check of the project: the loader and the
    bridge's early refusal both use it."""
    base = base or Path.cwd()
    try:
        real = Path(os.path.realpath(base / Path(path).expanduser()))
        roots = [Path(os.path.realpath(base / Path(d).expanduser())) for d in allowed_dirs]
    except (OSError, RuntimeError, ValueError):
        return None
    return real if any(real == r or r in real.parents for r in roots) else None


def check_allowed_path(
    path: str | Path, allowed_dirs: Sequence[str | Path], base: Path | None = None
) -> Path:
    """The real path of an existing file inside one of ``allowed_dirs``; raises
    :class:`ValueModelError` naming the folders otherwise."""
    real = allowed_real_path(path, allowed_dirs, base)
    if real is None:
        shown = ", ".join(f"{d}/" for d in allowed_dirs) or "(none)"
        raise ValueModelError(f"{path}: outside the allowed folders {shown} (value.allowed_dirs)")
    if not real.is_file():
        raise ValueModelError(f"{path}: no such file")
    return real


def _archive_metadata(zf: zipfile.ZipFile) -> bytes:
    names = [n for n in zf.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
    if len(names) != 1:
        raise ValueModelError(f"no {METADATA_FILE} in the archive")
    return zf.read(names[0])


def _parse_metadata(blob: bytes | str, path: Path) -> ValueMetadata:
    try:
        raw = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueModelError(f"{path}: {METADATA_FILE} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ValueModelError(f"{path}: {METADATA_FILE} is not an object")
    if raw.get("format") != FORMAT:
        raise ValueModelError(f"{path}: not a {FORMAT} file (format={raw.get('format')!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueModelError(
            f"{path}: format version {raw.get('format_version')!r} is not "
            f"supported (this build reads {FORMAT_VERSION})"
        )
    try:
        return ValueMetadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueModelError(f"{path}: metadata {loc}: {err['msg']}") from None


def read_metadata(path: str | Path) -> ValueMetadata:
    """Metadata of an artifact, read from the zip without executing anything."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            blob = _archive_metadata(zf)
    except FileNotFoundError:
        raise ValueModelError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueModelError(f"{path}: not a TorchScript archive ({exc})") from None
    except ValueModelError as exc:
        raise ValueModelError(f"{path}: {exc}") from None
    return _parse_metadata(blob, path)


@dataclass
class ValueModel:
    """A loaded, integrity-checked artifact."""

    path: Path
    module: Any  # torch.jit.ScriptModule
    metadata: ValueMetadata
    arrays: dict[str, np.ndarray]  # float64 copies of the weights, by state-dict name

    @property
    def model_id(self) -> str:
        return f"{self.path.name}@{self.metadata.weights_sha256[:8]}"

    @property
    def nx(self) -> int:
        return self.metadata.state.nx


def load_value_model(
    path: str | Path, allowed_dirs: Sequence[str | Path], base: Path | None = None
) -> ValueModel:
    """Load an artifact from an allowed folder and check it is whole and self-consistent."""
    import torch

    real = check_allowed_path(path, allowed_dirs, base)
    extra = {METADATA_FILE: ""}
    try:
        with quiet_torchscript():
            module = torch.jit.load(str(real), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError of many shapes here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueModelError(f"{path}: cannot load as TorchScript ({first[:160]})") from None
    meta = _parse_metadata(extra[METADATA_FILE], Path(path))  # bytes, though typed str
    arrays = {
        k: v.detach().to(torch.float64).numpy().copy() for k, v in module.state_dict().items()
    }
    digest = weights_sha256(arrays)
    if digest != meta.weights_sha256:
        raise ValueModelError(
            f"{path}: weights sha256 {digest[:12]}... does not match the "
            f"metadata's {meta.weights_sha256[:12]}... (corrupted or edited)"
        )
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ValueModelError(f"{path}: weights contain NaN or inf")
    n_x_theta = meta.state.nx + len(meta.task_params)
    if meta.architecture.n_in != n_x_theta:
        raise ValueModelError(
            f"{path}: input width {meta.architecture.n_in} != state "
            f"{meta.state.nx} + {len(meta.task_params)} task parameters"
        )
    return ValueModel(Path(path), module, meta, arrays)
