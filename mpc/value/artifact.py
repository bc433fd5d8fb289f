"""The value-model artifact: the contract between learning/ (which writes it) and mpc/ (which
loads it).

One TorchScript file (``torch.jit.script`` then ``save``), format version 2, holding

* ``forward(z_batch) -> V`` with z = [x, theta] (state, then task parameters),
* ``value_and_derivatives(z) -> (V, V_z, V_zz)`` for one input, analytic, float64,
* in the archive's extra files: ``metadata.json`` (:class:`ValueMetadata`) and
  ``weights.safetensors`` (the same weights, float64, in a format that loads without code).

TorchScript is executable code (``torch.jit.load`` runs the archive's ``__setstate__``), so the
controller never loads it by default: :func:`load_value_model` opens the file once (inside the
allowed folders, owned by us or root, not writable by group or others), reads it from that
handle with size caps, and takes only the metadata and the safetensors weights, checked against
each other and against the hashes in the metadata. ``model.module`` (the TorchScript evaluator)
runs the file only when its whole-file sha256 is trusted: listed in ``TRUSTED.sha256`` next to
it, or passed explicitly (``value.trusted_sha256``). Version 1 files (no safetensors) are refused
with a pointer to ``vmpc value upgrade``.

The container is that of a format family (:data:`FAMILY`): warm-start policies
(mpc/policy/artifact.py) are the same archive with another metadata schema. What every member
shares lives here once: the allowed-folder and permission checks and capped read
(:func:`open_allowed`), the archive checks (:func:`parse_archive`, driven by an
:class:`ArchiveKind`: format, schema, expected tensor shapes, error class) and the no-code
metadata read (:func:`read_archive_metadata`). A member's file given to another member's loader
is refused with one line naming what it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

import numpy as np
from pydantic import Field, ValidationError, field_validator

from sim.specs import Strict, resolve_urdf

from ..errors import VmpcError

__all__ = [
    "FAMILY",
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedArtifact",
    "MAX_FILE_BYTES",
    "METADATA_FILE",
    "ModuleSha256",
    "TRUST_MANIFEST",
    "WEIGHTS_FILE",
    "TARGET_PARAMS",
    "VALUE_ARCHIVE",
    "Architecture",
    "ArchiveKind",
    "ArchiveMetadata",
    "Provenance",
    "StateLayout",
    "TrainedWith",
    "ValueMetadata",
    "ValueModel",
    "ValueModelError",
    "allowed_real_path",
    "check_allowed_path",
    "check_task",
    "errors_as",
    "file_sha256",
    "load_value_model",
    "mlp_shapes",
    "module_sha256",
    "open_allowed",
    "parse_archive",
    "parse_artifact",
    "read_archive_metadata",
    "read_trusted",
    "quiet_torchscript",
    "read_metadata",
    "task_fingerprint",
    "legacy_task_fingerprint",
    "weights_sha256",
]

FORMAT = "vmpc-value"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # read_metadata reads both; only 2 loads
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
TRUST_MANIFEST = "TRUSTED.sha256"  # "<sha256>  <file name>" lines, next to the models
# Caps of the default (no-code) load. The shipped models are ~190 KB with ~30 members.
MAX_FILE_BYTES = 64 << 20
MAX_MEMBERS = 256
MAX_MEMBER_BYTES = 32 << 20
MAX_DEFLATED_BYTES = 256 << 10  # TorchScript deflates its code files (a few KB each)
MAX_HEADER_BYTES = 64 << 10  # the safetensors JSON header
MAX_METADATA_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 64 << 10
TARGET_PARAMS = ("target_x", "target_y", "target_z")  # EE target [m], world frame
# The format family: one container (TorchScript archive + metadata.json + weights.safetensors)
# for every learned network the controller loads. A file of one member given to the loader of
# another is refused by name: {format: (what it is, the command that reads it)}.
FAMILY = {
    "vmpc-value": ("value", "vmpc value inspect"),
    "vmpc-policy": ("policy", "vmpc policy inspect"),
}


class ValueModelError(VmpcError):
    """A value-model file cannot be used; the message says why in one line."""


class Architecture(Strict):
    kind: Literal["residual", "feedforward"]
    n_in: int = Field(gt=0, description="input width: state + task parameters + features")
    hidden: list[int] = Field(min_length=1, max_length=64)
    residual_dim: int | None = Field(default=None, gt=0, description="width of r(z)")
    activation: Literal["tanh"] = "tanh"
    goal_zero: bool = Field(
        default=False,
        description="residual r(z) - r(z * goal_mask): V and dV/dx are exactly 0 at rest with "
        "the EE on the target (mpc/value/feature_evaluator.py)",
    )


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
    state_box: tuple[list[float], list[float]] | None = Field(
        default=None, description="(min, max) of the states trained on, [q, v]"
    )


class Provenance(Strict):
    algorithm: str
    iterations: int | None = None
    samples: int | None = None
    date: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    notes: str = ""


# The hash of an archive's code, in the metadata of every member of the family.
ModuleSha256 = Annotated[
    str | None,
    Field(description="sha256 of the archive's TorchScript members (all but extra/); format 2"),
]


class ValueMetadata(Strict):
    format: Literal["vmpc-value"] = "vmpc-value"
    format_version: int = FORMAT_VERSION
    architecture: Architecture
    state: StateLayout
    task_params: list[str] = Field(default_factory=list)
    features: list[str] = Field(
        default_factory=list,
        description="task-space input features after [x, theta] (mpc/value/features.py)",
    )
    task_fingerprint: str
    trained: TrainedWith = Field(default_factory=TrainedWith)
    provenance: Provenance
    weights_sha256: str
    module_sha256: ModuleSha256 = None

    @field_validator("features")
    @classmethod
    def _known_features(cls, names: list[str]) -> list[str]:
        from .features import feature_dim

        feature_dim(names)  # raises UnknownFeature, a ValueError: one line naming it
        return names

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


def _task_definition(cfg: Any, task_params: Sequence[str], with_posture: bool) -> bytes:
    urdf = resolve_urdf(cfg.robot.urdf, cfg.base_dir)
    conditioned_on_target = set(TARGET_PARAMS) <= set(task_params)
    robot = {
        "name": cfg.robot.name,
        "urdf_sha256": hashlib.sha256(urdf.read_bytes()).hexdigest(),
        "ee_frame": cfg.robot.ee_frame,
        "ee_offset": cfg.robot.ee_offset,
        "locked_joints": cfg.robot.locked_joints,
        "torque_limits": cfg.robot.torque_limits,
    }
    if with_posture:
        robot["posture"] = cfg.robot.posture
    definition = {
        "robot": robot,
        "ocp": {
            "dt": cfg.ocp.dt,
            "integrator": cfg.ocp.integrator,
            "armature": cfg.ocp.armature,
            "torque_bounds": cfg.ocp.torque_bounds,
            "costs": cfg.ocp.costs.model_dump(mode="json"),
        },
        "target": None if conditioned_on_target else cfg.task.target,
    }
    return json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()


def task_fingerprint(cfg: Any, task_params: Sequence[str] = ()) -> str:
    """sha256 of everything that defines the cost-to-go a value is trained for: the robot and
    its URDF, the dynamics options, the running cost, and the target unless it is an input.
    The posture (``robot.q_posture``, else ``robot.q0``) only when the cost pulls toward it
    (``state_reg`` and ``state_reg_q`` > 0): a start configuration is not part of the task."""
    costs = cfg.ocp.costs
    pulls_to_posture = costs.state_reg > 0 and costs.state_reg_q > 0
    blob = _task_definition(cfg, task_params, with_posture=pulls_to_posture)
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def legacy_task_fingerprint(cfg: Any, task_params: Sequence[str] = ()) -> str:
    """The fingerprint of files written before December 2026, which held the posture always;
    ``vmpc value upgrade --config`` recognises it and rewrites the metadata."""
    blob = _task_definition(cfg, task_params, with_posture=True)
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _roots(allowed_dirs: Sequence[str | Path], bases: Sequence[Path]) -> list[Path]:
    """Real paths of the allowed folders: absolute entries as they are, relative ones against
    every base (the config file's folder first)."""
    roots = []
    for d in allowed_dirs:
        p = Path(d).expanduser()
        for b in [Path("/")] if p.is_absolute() else bases:
            roots.append(Path(os.path.realpath(b / p)))
    return roots


def _bases(base: Path | Sequence[Path] | None) -> list[Path]:
    if base is None:
        return [Path.cwd()]
    return [base] if isinstance(base, Path) else list(base)


def allowed_real_path(
    path: str | Path,
    allowed_dirs: Sequence[str | Path],
    base: Path | Sequence[Path] | None = None,
) -> Path | None:
    """The real path of ``path`` (relative to the working directory; symlinks and '..'
    resolved) if it lies inside one of ``allowed_dirs`` (relative entries resolved against
    ``base``, default the working directory), else None. The one folder check of the project:
    the loader and the bridge's early refusal both use it."""
    try:
        real = Path(os.path.realpath(Path(path).expanduser()))
        roots = _roots(allowed_dirs, _bases(base))
    except (OSError, RuntimeError, ValueError):
        return None
    return real if any(real == r or r in real.parents for r in roots) else None


def _outside(path: str | Path, allowed_dirs: Sequence[str | Path]) -> ValueModelError:
    shown = ", ".join(f"{d}/" for d in allowed_dirs) or "(none)"
    return ValueModelError(f"{path}: outside the allowed folders {shown} (value.allowed_dirs)")


def check_allowed_path(
    path: str | Path,
    allowed_dirs: Sequence[str | Path],
    base: Path | Sequence[Path] | None = None,
) -> Path:
    """The real path of an existing file inside one of ``allowed_dirs``; raises
    :class:`ValueModelError` naming the folders otherwise."""
    real = allowed_real_path(path, allowed_dirs, base)
    if real is None:
        raise _outside(path, allowed_dirs)
    if not real.is_file():
        raise ValueModelError(f"{path}: no such file")
    return real


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


def _check_folders(path: str | Path, real: Path, roots: Sequence[Path]) -> None:
    """Every folder from the file's up to its allowed root: owned by us or root, not writable
    by group or others (as ssh checks ~/.ssh)."""
    root = next((r for r in roots if r == real or r in real.parents), None)
    folder = real.parent
    while True:
        st = os.stat(folder)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueModelError(
                f"{path}: folder {folder} is writable by group or others; refusing to load "
                f"(chmod go-w {folder})"
            )
        if not _owner_ok(st):
            raise ValueModelError(
                f"{path}: folder {folder} is owned by another user (uid {st.st_uid})"
            )
        if root is None or folder == root or folder == folder.parent:
            return
        folder = folder.parent


def _read_checked(path: str | Path, real: Path, cap: int) -> bytes:
    """Open ``real`` once (no symlink at the last component, no blocking on a FIFO), check the
    open file (regular, size, owner, mode) and read it from the same handle."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise ValueModelError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueModelError(f"{path}: cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueModelError(f"{path}: not a regular file")
        if st.st_size > cap:
            raise ValueModelError(f"{path}: {st.st_size} bytes, over the {cap}-byte cap")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueModelError(
                f"{path}: writable by group or others; refusing to load (chmod go-w {path})"
            )
        if not _owner_ok(st):
            raise ValueModelError(f"{path}: owned by another user (uid {st.st_uid})")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise ValueModelError(f"{path}: grew over the {cap}-byte cap while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_allowed(
    path: str | Path,
    allowed_dirs: Sequence[str | Path],
    base: Path | Sequence[Path] | None = None,
    cap: int = MAX_FILE_BYTES,
) -> tuple[Path, bytes]:
    """(real path, bytes) of a file inside the allowed folders, checked as ssh checks its keys
    and read from the one handle that was checked."""
    bases = _bases(base)
    real = allowed_real_path(path, allowed_dirs, bases)
    if real is None:
        raise _outside(path, allowed_dirs)
    if not os.path.lexists(real):
        raise ValueModelError(f"{path}: no such file")
    _check_folders(path, real, _roots(allowed_dirs, bases))
    return real, _read_checked(path, real, cap)


def file_sha256(path_or_bytes: str | Path | bytes) -> str:
    """Hex sha256 of a whole file (what TRUSTED.sha256 and value.trusted_sha256 list)."""
    blob = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(blob).hexdigest()


def read_trusted(folder: Path) -> set[str]:
    """The sha256 values of ``folder/TRUSTED.sha256`` (sha256sum format), read with the same
    checks as a model; an absent manifest trusts nothing."""
    manifest = folder / TRUST_MANIFEST
    if not manifest.is_file():
        return set()
    blob = _read_checked(manifest, manifest, MAX_MANIFEST_BYTES)
    out = set()
    for line in blob.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 64 and all(c in "0123456789abcdef" for c in parts[0]):
            out.add(parts[0])
    return out


# -- the archive, read without running it -----------------------------------------------------
def _zip(blob: bytes, path: str | Path) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueModelError(f"{path}: cannot load as TorchScript archive ({exc})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ValueModelError(f"{path}: {len(infos)} archive members, over the {MAX_MEMBERS} cap")
    for info in infos:
        if info.file_size > MAX_MEMBER_BYTES:
            raise ValueModelError(
                f"{path}: member {info.filename} is {info.file_size} bytes, over the "
                f"{MAX_MEMBER_BYTES}-byte cap"
            )
        if info.compress_type != zipfile.ZIP_STORED and (
            info.file_size > MAX_DEFLATED_BYTES or info.compress_size > MAX_DEFLATED_BYTES
        ):
            raise ValueModelError(
                f"{path}: member {info.filename} is compressed and {info.file_size} bytes, over "
                f"the {MAX_DEFLATED_BYTES}-byte cap for compressed members"
            )
    return zf


def _member(zf: zipfile.ZipFile, blob: bytes, info: zipfile.ZipInfo, path: str | Path) -> bytes:
    """A member's bytes, bounded by its declared size. Stored members are sliced from the
    buffer after their local header (so a damaged one reaches the hash check); compressed ones
    (small, capped above) go through zipfile with its CRC check."""
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            off = info.header_offset
            head = blob[off : off + 30]
            if len(head) != 30 or head[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"bad local header of {info.filename}")
            n_name, n_extra = struct.unpack("<HH", head[26:30])
            start = off + 30 + n_name + n_extra
            data = blob[start : start + info.compress_size]
            if len(data) != info.file_size:
                raise zipfile.BadZipFile(f"{info.filename} is truncated")
            return data
        with zf.open(info) as fh:
            data = fh.read(MAX_DEFLATED_BYTES + 1)
        if len(data) > MAX_DEFLATED_BYTES:
            raise zipfile.BadZipFile(f"{info.filename} inflates past its cap")
        return data
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueModelError(f"{path}: cannot load as TorchScript archive ({exc})") from None


def _extra(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    infos = [i for i in zf.infolist() if i.filename.endswith(f"/extra/{name}")]
    if len(infos) > 1:
        raise ValueModelError(f"{len(infos)} copies of {name} in the archive")
    return infos[0] if infos else None


def module_sha256(zf: zipfile.ZipFile, blob: bytes, path: str | Path = "<archive>") -> str:
    """sha256 of the TorchScript part of an archive: every member by name, but extra/ and the
    per-save .data/serialization_id."""
    h = hashlib.sha256()
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        if "/extra/" in info.filename or info.filename.endswith("/.data/serialization_id"):
            continue
        data = _member(zf, blob, info, path)
        h.update(info.filename.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


@contextlib.contextmanager
def errors_as(error: type[VmpcError]) -> Iterator[None]:
    """Re-raise the container helpers' :class:`ValueModelError` as ``error`` with the same
    one-line message. The helpers (allowed folders, size caps, zip members) serve the whole
    format family; this lets another member's loader (mpc.policy.artifact) raise its own class
    without a second copy of them."""
    try:
        yield
    except ValueModelError as exc:
        if isinstance(exc, error):
            raise
        raise error(str(exc)) from None


class ArchiveMetadata(Protocol):
    """What the container reads of any member's metadata (:class:`ValueMetadata`,
    ``mpc.policy.artifact.PolicyMetadata``)."""

    @property
    def format_version(self) -> int: ...
    @property
    def weights_sha256(self) -> str: ...
    @property
    def module_sha256(self) -> str | None: ...
    @property
    def architecture(self) -> Any: ...  # its ``kind`` names the network in messages


MetaT = TypeVar("MetaT", bound=ArchiveMetadata)


@dataclass(frozen=True)
class ArchiveKind(Generic[MetaT]):
    """One member of the format family: all :func:`parse_archive` needs to tell its files from
    the others' and to check their weights against their metadata."""

    format: str  # metadata.json's "format", e.g. "vmpc-value"
    version: int  # the one version that loads
    validate: Callable[[Any], MetaT]  # the metadata schema (a pydantic model_validate)
    expected_shapes: Callable[[MetaT], dict[str, tuple[int, ...]]]  # {tensor: shape}
    error: type[VmpcError]  # what the member's loader raises
    old_versions: tuple[int, ...] = ()  # read (inspect) but refused by the loader
    old_version_hint: Callable[[str | Path], str] | None = None  # the refusal, naming a fix

    @property
    def readable(self) -> tuple[int, ...]:
        return (*self.old_versions, self.version)


def _parse_metadata(blob: bytes | str, path: str | Path, kind: ArchiveKind[MetaT]) -> MetaT:
    error = kind.error
    try:
        raw = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise error(f"{path}: {METADATA_FILE} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: {METADATA_FILE} is not an object")
    got = raw.get("format")
    if got != kind.format:
        if isinstance(got, str) and got in FAMILY:
            what, command = FAMILY[got]
            raise error(
                f"{path}: a {what} artifact (format {got!r}), not a {kind.format} file; "
                f"`{command}` reads it"
            )
        raise error(f"{path}: not a {kind.format} file (format={got!r})")
    if raw.get("format_version") not in kind.readable:
        raise error(
            f"{path}: format version {raw.get('format_version')!r} is not "
            f"supported (this build reads {kind.version})"
        )
    try:
        return kind.validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise error(f"{path}: metadata {loc}: {err['msg']}") from None


def _metadata_of(
    zf: zipfile.ZipFile, blob: bytes, path: str | Path, kind: ArchiveKind[MetaT]
) -> MetaT:
    try:
        info = _extra(zf, METADATA_FILE)
    except ValueModelError as exc:
        raise kind.error(f"{path}: {exc}") from None
    if info is None:
        raise kind.error(f"{path}: no {METADATA_FILE} in the archive")
    if info.file_size > MAX_METADATA_BYTES:
        raise kind.error(
            f"{path}: {METADATA_FILE} is {info.file_size} bytes, over the "
            f"{MAX_METADATA_BYTES}-byte cap"
        )
    with errors_as(kind.error):
        raw = _member(zf, blob, info, path)
    return _parse_metadata(raw, path, kind)


def read_archive_metadata(path: str | Path, kind: ArchiveKind[MetaT]) -> MetaT:
    """Metadata of a family member's file (every readable version), read from the zip without
    executing anything and without the allowed-folder checks: what ``inspect`` shows."""
    error = kind.error
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: not a TorchScript archive ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise error(f"{path}: not a TorchScript archive (not a file, or too big)")
        blob = fh.read(MAX_FILE_BYTES + 1)
    try:
        zf = _zip(blob, path)
    except ValueModelError as exc:
        raise error(str(exc).replace("cannot load as", "not a")) from None
    return _metadata_of(zf, blob, path, kind)


def _weights(
    raw: bytes, meta: MetaT, path: str | Path, kind: ArchiveKind[MetaT]
) -> dict[str, np.ndarray]:
    """The safetensors weights, after their header's names, dtypes and shapes are compared
    with the metadata's architecture (nothing is sized from the metadata before that)."""
    error = kind.error
    if len(raw) < 8:
        raise error(f"{path}: {WEIGHTS_FILE} is truncated")
    (n_head,) = struct.unpack("<Q", raw[:8])
    if n_head > MAX_HEADER_BYTES or 8 + n_head > len(raw):
        raise error(f"{path}: {WEIGHTS_FILE} header of {n_head} bytes is invalid")
    try:
        header = json.loads(raw[8 : 8 + n_head])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise error(f"{path}: {WEIGHTS_FILE} header is not valid JSON") from None
    if not isinstance(header, dict):
        raise error(f"{path}: {WEIGHTS_FILE} header is not an object")
    header.pop("__metadata__", None)
    try:
        expected = kind.expected_shapes(meta)
    except VmpcError as exc:
        raise error(f"{path}: {exc}") from None
    if set(header) != set(expected):
        raise error(
            f"{path}: tensors {sorted(header)[:6]} do not match the metadata's "
            f"{meta.architecture.kind} network {sorted(expected)[:6]}"
        )
    for name, want in expected.items():
        entry = header[name] if isinstance(header[name], dict) else {}
        shape, dtype = entry.get("shape"), entry.get("dtype")
        got = tuple(shape) if isinstance(shape, list) else None
        if dtype != "F64" or got != want:
            raise error(
                f"{path}: tensor {name} is {dtype} {list(got or ())}, the metadata's "
                f"architecture says F64 {list(want)}"
            )
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(raw)
    except (SafetensorError, ValueError) as exc:
        raise error(f"{path}: {WEIGHTS_FILE} is invalid ({exc})") from None
    return {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}


def mlp_shapes(n_in: int, hidden: Sequence[int], n_out: int) -> dict[str, tuple[int, ...]]:
    """The tensors of the family's networks, by state-dict name: input normalisation
    (``in_mean``, ``in_std``), ``layers.i.weight/bias`` and ``out.weight/bias``. A member's
    ``expected_shapes`` adds its own buffers."""
    widths = [n_in, *hidden]
    shapes: dict[str, tuple[int, ...]] = {"in_mean": (n_in,), "in_std": (n_in,)}
    for i in range(len(hidden)):
        shapes[f"layers.{i}.weight"] = (widths[i + 1], widths[i])
        shapes[f"layers.{i}.bias"] = (widths[i + 1],)
    shapes["out.weight"] = (n_out, widths[-1])
    shapes["out.bias"] = (n_out,)
    return shapes


def parse_archive(
    blob: bytes, path: str | Path, kind: ArchiveKind[MetaT]
) -> tuple[MetaT, dict[str, np.ndarray]]:
    """The container checks every member of the family shares, on a file's bytes, running
    nothing: a zip within the caps, ``kind``'s format and version, metadata valid against its
    schema, safetensors weights whose names, dtypes (F64) and shapes are those the metadata's
    architecture says, the weights sha256 and the TorchScript sha256 the metadata records, and
    finite weights. Returns (metadata, float64 weights); the member's loader adds its own
    checks (input width, ...). Raises ``kind.error`` with one line naming the file."""
    error = kind.error
    with errors_as(error):  # the zip helpers raise ValueModelError
        zf = _zip(blob, path)
        meta = _metadata_of(zf, blob, path, kind)
        if meta.format_version != kind.version:  # readable (inspect) but not loadable
            hint = kind.old_version_hint
            raise error(hint(path) if hint else f"{path}: format version {meta.format_version}")
        info = _extra(zf, WEIGHTS_FILE)
        if info is None or meta.module_sha256 is None:
            raise error(f"{path}: format 2 without {WEIGHTS_FILE} or module_sha256")
        arrays = _weights(_member(zf, blob, info, path), meta, path, kind)
        digest = weights_sha256(arrays)
        if digest != meta.weights_sha256:
            raise error(
                f"{path}: weights sha256 {digest[:12]}... does not match the "
                f"metadata's {meta.weights_sha256[:12]}... (corrupted or edited)"
            )
        code = module_sha256(zf, blob, path)
        if code != meta.module_sha256:
            raise error(
                f"{path}: TorchScript sha256 {code[:12]}... does not match the "
                f"metadata's {meta.module_sha256[:12]}... (corrupted or edited)"
            )
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise error(f"{path}: weights contain NaN or inf")
    return meta, arrays


# -- the value member of the family -----------------------------------------------------------
def upgrade_hint(path: str | Path) -> str:
    return (
        f"{path}: format version 1 (its weights load only by running its TorchScript); "
        f"rewrite it as version 2 with `vmpc value upgrade {path}`"
    )


def _expected_shapes(meta: ValueMetadata) -> dict[str, tuple[int, ...]]:
    a = meta.architecture
    n_out = a.residual_dim if a.kind == "residual" else 1
    if n_out is None:
        raise ValueModelError("metadata: a residual network needs architecture.residual_dim")
    return mlp_shapes(a.n_in, a.hidden, n_out)


VALUE_ARCHIVE: ArchiveKind[ValueMetadata] = ArchiveKind(
    format=FORMAT,
    version=FORMAT_VERSION,
    validate=ValueMetadata.model_validate,
    expected_shapes=_expected_shapes,
    error=ValueModelError,
    old_versions=tuple(v for v in READABLE_VERSIONS if v != FORMAT_VERSION),
    old_version_hint=upgrade_hint,
)


def read_metadata(path: str | Path) -> ValueMetadata:
    """Metadata of an artifact (format 1 or 2), read from the zip without executing anything."""
    return read_archive_metadata(path, VALUE_ARCHIVE)


class LoadedArtifact:
    """What every loaded member of the family answers (a mixin of the dataclasses
    :class:`ValueModel` and ``mpc.policy.artifact.PolicyModel``, which hold ``path`` and
    ``metadata``)."""

    path: Path
    metadata: Any  # the member's metadata: ValueMetadata, PolicyMetadata

    @property
    def model_id(self) -> str:
        """``file@weights-hash``: names the file and the weights it holds, in logs and runs."""
        return f"{self.path.name}@{self.metadata.weights_sha256[:8]}"

    @property
    def nx(self) -> int:
        state: StateLayout = self.metadata.state
        return state.nx


def check_task(model: LoadedArtifact, cfg: Any, nx: int, joint_names: Sequence[str]) -> str | None:
    """Whether a loaded member of the family (a value, a policy) serves the task of ``cfg``
    (an MPC config) on a robot with state width ``nx`` and these joints: raise
    :class:`ValueModelError` on another robot, state layout or unknown task parameters; return
    the task-fingerprint mismatch (which a forced swap may override), or None."""
    meta, path = model.metadata, model.path
    if meta.state.nx != nx:
        raise ValueModelError(f"{path}: state dimension {meta.state.nx} != this robot's {nx}")
    if meta.state.robot != cfg.robot.name:
        raise ValueModelError(
            f"{path}: trained for robot '{meta.state.robot}', this is '{cfg.robot.name}'"
        )
    if meta.state.joint_names != list(joint_names):
        raise ValueModelError(
            f"{path}: joint layout {meta.state.joint_names} != {list(joint_names)}"
        )
    if meta.task_params not in ([], list(TARGET_PARAMS)):
        raise ValueModelError(
            f"{path}: unknown task parameters {meta.task_params}; this MPC "
            f"provides none or {list(TARGET_PARAMS)}"
        )
    expected = task_fingerprint(cfg, meta.task_params)
    if meta.task_fingerprint != expected:
        if meta.task_fingerprint == legacy_task_fingerprint(cfg, meta.task_params):
            return (
                f"task fingerprint {meta.task_fingerprint[:19]}... is this task's by the "
                f"formula before December 2026 (which held the posture); run `vmpc value "
                f"upgrade {path} --config {cfg.source}` to rewrite it"
            )
        return (
            f"task fingerprint {meta.task_fingerprint[:19]}... != this task's "
            f"{expected[:19]}... (trained for a different cost, robot or target)"
        )
    return None


@dataclass
class ValueModel(LoadedArtifact):
    """A loaded, integrity-checked artifact: metadata and float64 weights. ``module`` (the
    TorchScript, executable code) is loaded on first use, and only from a trusted file."""

    path: Path
    _module: Any  # the TorchScript once loaded (None: not loaded); see ``module``
    metadata: ValueMetadata
    arrays: dict[str, np.ndarray]  # float64 weights, by state-dict name
    file_sha256: str = ""
    trusted: bool = False
    blob: bytes = field(default=b"", repr=False)  # the file as read and checked

    @property
    def module(self) -> Any:
        """The TorchScript module (runs the file's code): only for a trusted file."""
        if self._module is None:
            if not self.trusted:
                raise ValueModelError(
                    f"{self.path}: the TorchScript evaluator runs the file's code, and its "
                    f"sha256 {self.file_sha256[:16]}... is not trusted (list it in "
                    f"{TRUST_MANIFEST} next to the file or in value.trusted_sha256)"
                )
            self._module = _jit_load(self.blob, self.path)
        return self._module


def _jit_load(blob: bytes, path: str | Path) -> Any:
    import torch

    try:
        with quiet_torchscript():
            return torch.jit.load(io.BytesIO(blob), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError of many shapes here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueModelError(f"{path}: cannot load as TorchScript ({first[:160]})") from None


def parse_artifact(
    blob: bytes, path: str | Path, trusted_sha256: Collection[str] = ()
) -> ValueModel:
    """Check an artifact's bytes (format 2) and take its metadata and weights; runs nothing."""
    meta, arrays = parse_archive(blob, path, VALUE_ARCHIVE)
    from .features import feature_dim

    n_features = feature_dim(meta.features)
    if meta.architecture.n_in != meta.state.nx + len(meta.task_params) + n_features:
        raise ValueModelError(
            f"{path}: input width {meta.architecture.n_in} != state "
            f"{meta.state.nx} + {len(meta.task_params)} task parameters + {n_features} features"
        )
    if meta.architecture.goal_zero and meta.architecture.kind != "residual":
        raise ValueModelError(f"{path}: goal_zero needs a residual network")
    if meta.architecture.goal_zero and "ee_position_error" not in meta.features:
        # Without it z * goal_mask = z at every state at rest, not only at the goal.
        raise ValueModelError(f"{path}: goal_zero needs the ee_position_error feature")
    sha = hashlib.sha256(blob).hexdigest()
    return ValueModel(Path(path), None, meta, arrays, sha, sha in set(trusted_sha256), blob)


def load_value_model(
    path: str | Path,
    allowed_dirs: Sequence[str | Path],
    base: Path | Sequence[Path] | None = None,
    *,
    trusted_sha256: Collection[str] = (),
    module: bool = False,
) -> ValueModel:
    """Load an artifact from an allowed folder and check it is whole and self-consistent,
    without running any of it. ``module=True`` also loads the TorchScript, which needs the
    file's sha256 in ``trusted_sha256`` or in the folder's TRUSTED.sha256."""
    real, blob = open_allowed(path, allowed_dirs, base)
    trusted = set(trusted_sha256)
    with contextlib.suppress(ValueModelError):  # an unsafe manifest trusts nothing
        trusted |= read_trusted(real.parent)
    model = parse_artifact(blob, path, trusted)
    if module:
        _ = model.module
    return model
