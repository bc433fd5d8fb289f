"""Write a trained value network as the TorchScript artifact mpc loads (see mpc.value.artifact):
format 2, the scripted module plus ``metadata.json`` and ``weights.safetensors`` as extra files.

:func:`build_metadata` is the one place an artifact's metadata is put together, for the file
and for the in-memory payloads DVP ships to its workers.

The same for warm-start policies (mpc.policy.artifact, the second member of the format
family): :func:`build_policy_metadata`, :func:`export_policy`. Both members share the container
writer (:func:`write_archive`, which parses the bytes back with the member's loader before
writing) and the fields every member records (:class:`ArtifactFields`).
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import io
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Required, TypedDict, TypeVar, Unpack

import numpy as np
import torch

from mpc.errors import VmpcError
from mpc.io import atomic_write_bytes
from mpc.policy.artifact import ControlBox, PolicyArchitecture, PolicyMetadata, parse_policy
from mpc.value.artifact import (
    METADATA_FILE,
    WEIGHTS_FILE,
    Architecture,
    Provenance,
    StateLayout,
    TrainedWith,
    ValueMetadata,
    ValueModelError,
    legacy_task_fingerprint,
    module_sha256,
    parse_artifact,
    quiet_torchscript,
    read_metadata,
    task_fingerprint,
    weights_sha256,
)
from mpc.value.features import feature_dim, goal_mask

from .networks import PolicyNet, ValueNet, make_value_net

__all__ = [
    "ArtifactFields",
    "build_metadata",
    "build_policy_metadata",
    "build_provenance",
    "refingerprint_value",
    "export_policy",
    "export_value",
    "git_commit",
    "library_versions",
    "recorded_fields",
    "save_artifact",
    "save_policy_artifact",
    "script_module",
    "script_policy",
    "script_value",
    "upgrade_value",
    "write_archive",
]

# The metadata of a member of the format family (mpc.value.artifact.FAMILY).
Meta = TypeVar("Meta", ValueMetadata, PolicyMetadata)


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


def build_provenance(
    algorithm: str, iterations: int | None = None, samples: int | None = None, notes: str = ""
) -> Provenance:
    """Where an artifact comes from, stamped now: the algorithm and its budget, the date, the
    library versions and the git commit of this checkout."""
    return Provenance(
        algorithm=algorithm,
        iterations=iterations,
        samples=samples,
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        library_versions=library_versions(),
        git_commit=git_commit(),
        notes=notes,
    )


class ArtifactFields(TypedDict, total=False):
    """What every member of the format family records besides its network: the keyword
    arguments of :func:`build_metadata`, :func:`export_value` and their policy counterparts
    (learning/policy_export.py)."""

    state: Required[StateLayout]  # robot, joint names, nx
    task_params: Required[list[str]]  # the inputs after the state, e.g. TARGET_PARAMS
    task_fingerprint: Required[str]  # mpc.value.artifact.task_fingerprint of the task
    algorithm: Required[str]  # what trained it, e.g. 'dvp', 'plal'
    trained: TrainedWith | None  # dt, horizon, task and state boxes
    iterations: int | None
    samples: int | None
    notes: str


def recorded_fields(net: torch.nn.Module, fields: ArtifactFields) -> dict[str, Any]:
    """The metadata entries every member shares, for ``net``: state layout, task, training
    set-up, a provenance stamped now and the hash of its (float64) weights."""
    arrays = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    return {
        "state": fields["state"],
        "task_params": list(fields["task_params"]),
        "task_fingerprint": fields["task_fingerprint"],
        "trained": fields.get("trained") or TrainedWith(),
        "provenance": build_provenance(
            fields["algorithm"],
            fields.get("iterations"),
            fields.get("samples"),
            fields.get("notes", ""),
        ),
        "weights_sha256": weights_sha256(arrays),
    }


def build_metadata(
    net: ValueNet, *, features: list[str] | None = None, **fields: Unpack[ArtifactFields]
) -> ValueMetadata:
    """The metadata of ``net`` as an artifact: architecture, state layout, task, input
    features, provenance and the hash of its weights (``fields``: :class:`ArtifactFields`)."""
    meta = ValueMetadata(
        architecture=Architecture(
            kind=net.kind,  # type: ignore[arg-type]  # Final[str] for TorchScript; validated here
            n_in=net.n_in,
            hidden=net.hidden,
            residual_dim=net.residual_dim,
            goal_zero=bool(getattr(net, "goal_zero", False)),
        ),
        features=list(features or []),
        **recorded_fields(net, fields),
    )
    n_features, state = feature_dim(meta.features), meta.state
    if meta.architecture.n_in != state.nx + len(meta.task_params) + n_features:
        raise ValueError(
            f"network input {meta.architecture.n_in} != nx {state.nx} + "
            f"{len(meta.task_params)} task parameters + {n_features} features"
        )
    return meta


def export_value(
    net: ValueNet,
    path: str | Path,
    *,
    features: list[str] | None = None,
    **fields: Unpack[ArtifactFields],
) -> ValueMetadata:
    """Script ``net`` (as float64), attach metadata, and save atomically to ``path``."""
    meta = build_metadata(net, features=features, **fields)
    return save_artifact(script_value(net), meta, path)


def script_module(net: torch.nn.Module) -> Any:
    """A float64, eval-mode TorchScript copy of ``net`` (``net`` itself is left as it is)."""
    with quiet_torchscript():
        return torch.jit.script(copy.deepcopy(net).double().eval())


def script_value(net: ValueNet) -> Any:
    """A float64, eval-mode TorchScript copy of a value network."""
    return script_module(net)


def _safetensors(module: Any) -> tuple[bytes, dict[str, np.ndarray]]:
    from safetensors.numpy import save

    arrays = {
        k: np.ascontiguousarray(v.detach().to(torch.float64).numpy())
        for k, v in module.state_dict().items()
    }
    return save(arrays), arrays


def write_archive(
    scripted: Any, meta: Meta, path: str | Path, parse: Callable[[bytes, Path], object]
) -> Meta:
    """Write ``scripted`` as a format-2 archive of the family: its weights go to
    weights.safetensors, the hash of its TorchScript members into the metadata; the bytes are
    checked by ``parse`` (the member's loader, which runs no code) before they are written
    atomically, so a file the loader would refuse is never written."""
    weights, arrays = _safetensors(scripted)
    if weights_sha256(arrays) != meta.weights_sha256:
        raise ValueError("the module's weights do not match meta.weights_sha256")

    def dump(m: Meta) -> bytes:
        buf = io.BytesIO()
        extra = {METADATA_FILE: m.model_dump_json(indent=1), WEIGHTS_FILE: weights}
        with quiet_torchscript():
            torch.jit.save(scripted, buf, _extra_files=extra)
        return buf.getvalue()

    draft = dump(meta.model_copy(update={"format_version": 2, "module_sha256": "0" * 64}))
    code = module_sha256(zipfile.ZipFile(io.BytesIO(draft)), draft)
    meta = meta.model_copy(update={"format_version": 2, "module_sha256": code})
    blob = dump(meta)
    try:
        parse(blob, Path(path))  # the loader's own checks, before anything is written
    except VmpcError as exc:
        raise ValueError(f"export produced an artifact the loader refuses: {exc}") from None
    atomic_write_bytes(Path(path), blob)
    return meta


def save_artifact(scripted: Any, meta: ValueMetadata, path: str | Path) -> ValueMetadata:
    """Write ``scripted`` as a format-2 value artifact (:func:`write_archive`)."""
    return write_archive(scripted, meta, path, parse_artifact)


# -- policies --------------------------------------------------------------------------------
def build_policy_metadata(net: PolicyNet, **fields: Unpack[ArtifactFields]) -> PolicyMetadata:
    """The metadata of ``net`` as a policy artifact: architecture, state layout, task, the
    control box read from the network's own buffers (so the file's box is the one the network
    squashes into), provenance and the hash of its weights (``fields``: :class:`ArtifactFields`).
    Raises ValueError when the network's input is not the state plus the task parameters."""
    state, task_params = fields["state"], fields["task_params"]
    box = {k: v.detach().double().tolist() for k, v in net.named_buffers() if k in ("u_lb", "u_ub")}
    if net.n_in != state.nx + len(task_params):
        raise ValueError(
            f"network input {net.n_in} != nx {state.nx} + {len(task_params)} task parameters"
        )
    return PolicyMetadata(
        architecture=PolicyArchitecture(
            kind=net.kind,  # type: ignore[arg-type]  # Final[str] for TorchScript; validated here
            n_in=net.n_in,
            hidden=net.hidden,
            nu=net.nu,
            activation=net.activation,  # type: ignore[arg-type]  # a str; validated here
        ),
        control_box=ControlBox(**box),
        **recorded_fields(net, fields),
    )


def script_policy(net: PolicyNet) -> Any:
    """A float64, eval-mode TorchScript copy of a policy network."""
    return script_module(net)


def save_policy_artifact(scripted: Any, meta: PolicyMetadata, path: str | Path) -> PolicyMetadata:
    """Write ``scripted`` as a policy artifact (:func:`write_archive`, checked by the policy
    loader before the atomic write); returns the metadata as written."""
    return write_archive(scripted, meta, path, parse_policy)


def export_policy(
    net: PolicyNet, path: str | Path, **fields: Unpack[ArtifactFields]
) -> PolicyMetadata:
    """Script ``net`` (as float64), attach its metadata, and save atomically to ``path``."""
    return save_policy_artifact(script_policy(net), build_policy_metadata(net, **fields), path)


# -- rewriting value files ----------------------------------------------------------------------
def upgrade_value(src: str | Path, out: str | Path) -> ValueMetadata:
    """Rewrite a format-1 artifact as format 2: the same module, weights, weights hash and task
    fingerprint. Loading a format-1 file RUNS ITS TORCHSCRIPT: call this only on a file you
    trust (the CLI asks for the manifest or --trust)."""
    meta = read_metadata(src)
    if meta.format_version != 1:
        raise ValueModelError(f"{src}: already format version {meta.format_version}")
    try:
        with quiet_torchscript():
            module = torch.jit.load(str(src), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError of many shapes here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueModelError(f"{src}: cannot load as TorchScript ({first[:160]})") from None
    _, arrays = _safetensors(module)
    digest = weights_sha256(arrays)
    if digest != meta.weights_sha256:
        raise ValueModelError(
            f"{src}: weights sha256 {digest[:12]}... does not match the metadata's "
            f"{meta.weights_sha256[:12]}... (corrupted or edited)"
        )
    return save_artifact(module, meta, out)


def refingerprint_value(src: str | Path, out: str | Path, cfg: Any) -> tuple[str, str]:
    """Rewrite a format-2 artifact whose task fingerprint is ``cfg``'s by the formula before
    December 2026 (:func:`~mpc.value.artifact.legacy_task_fingerprint`) with the current one.
    Runs nothing from the file: the module is rebuilt from the architecture and the weights
    (same weights sha256) and scripted anew. Returns (old, new) fingerprints."""
    src = Path(src)
    model = parse_artifact(src.read_bytes(), src)
    meta = model.metadata
    new = task_fingerprint(cfg, meta.task_params)
    if meta.task_fingerprint == new:
        raise ValueModelError(f"{src}: the task fingerprint is already current for {cfg.source}")
    if meta.task_fingerprint != legacy_task_fingerprint(cfg, meta.task_params):
        raise ValueModelError(
            f"{src}: task fingerprint {meta.task_fingerprint[:19]}... is not {cfg.source}'s by "
            "either formula (trained for another task?); nothing rewritten"
        )
    arch = meta.architecture
    mask = (
        torch.from_numpy(goal_mask(meta.state.nx // 2, len(meta.task_params), meta.features))
        if arch.goal_zero
        else None
    )
    net = make_value_net(arch.kind, arch.n_in, arch.hidden, arch.residual_dim or 1, mask)
    state = net.double().state_dict()
    if set(state) != set(model.arrays):
        raise ValueModelError(f"{src}: its tensors do not fit a {arch.kind} network")
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.arrays.items()})
    notes = (meta.provenance.notes + "; " if meta.provenance.notes else "") + (
        f"task fingerprint rewritten {time.strftime('%Y-%m-%d')} (was {meta.task_fingerprint})"
    )
    update = {
        "task_fingerprint": new,
        "provenance": meta.provenance.model_copy(update={"notes": notes}),
    }
    save_artifact(script_value(net), meta.model_copy(update=update), out)
    return meta.task_fingerprint, new
