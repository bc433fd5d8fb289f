"""Atomic per-iteration checkpoints of a training run, and resuming from them.

Layout of a run folder::

    .lock                      flock'ed by the one trainer writing the folder (holds its PID)
    config.json                the resolved config of the run (``--resume`` compares against it)
    state.json                 {"completed": n}, rewritten atomically last
    checkpoints/validation.npz held-out problems and their ground truth (computed once)
    checkpoints/iter_0003/     dataset.npz, model.pt, optim.pt, torch_rng.pt, rng.json,
                               metrics.json, and manifest.json (the sha256 of each, written last)

An iteration's folder is written as ``iter_0003.tmp``, fsynced, renamed when complete (and its
parent folder fsynced), then ``state.json`` moves forward: a kill at any point loses at most the
iteration in progress, which ``--resume`` redoes from the same RNG state, so nothing is lost or
duplicated. Tensors are written with ``torch.save`` and read back with
``torch.load(weights_only=True)``: nothing is ever unpickled.

Every file is checked when read back (its manifest hash, then its structure); a file that fails
raises :class:`CheckpointError`, one line naming it. :meth:`RunFolder.intact` finds the longest
run of intact iterations, so a resume falls back to the last good one.

Only one process may write a run folder: :class:`RunFolder` holds ``fcntl.flock`` on ``.lock``
until :meth:`RunFolder.close` (the kernel releases it when the process dies, even by kill -9).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpc.errors import VmpcError
from mpc.io import atomic_write_bytes, atomic_write_text, fsync_dir

__all__ = ["CheckpointError", "ConfigMismatch", "RunFolder", "RunLocked"]

DATASET_KEYS = ("z", "value", "grad_x")
ITERATION_FILES = (
    "dataset.npz",
    "model.pt",
    "optim.pt",
    "torch_rng.pt",
    "rng.json",
    "metrics.json",
)


class CheckpointError(VmpcError):
    """A run-folder file is missing, truncated or not what it should be (one line naming it)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: unreadable checkpoint file ({reason})")


class RunLocked(VmpcError):
    """Another process is writing the run folder."""


class ConfigMismatch(VmpcError):
    """``--resume`` under a config that would change the run's results."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:160]}"


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds could hold allow_pickle
    return buf.getvalue()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "missing") from None
    except OSError as exc:
        raise CheckpointError(path, _one_line(exc)) from None


def _parse_npz(path: Path, data: bytes, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every member read in full (so zip CRCs are checked), no pickles, the expected keys."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile, numpy format and CRC errors all mean the same here
        raise CheckpointError(path, _one_line(exc)) from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise CheckpointError(path, f"no array {', '.join(missing)}")
    rows = {len(arrays[k]) for k in keys if arrays[k].ndim}
    if len(rows) > 1:
        raise CheckpointError(path, f"arrays of different lengths {sorted(rows)}")
    return arrays


def _parse_torch(path: Path, data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # torch raises several kinds for a damaged archive
        raise CheckpointError(path, _one_line(exc)) from None


def _parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(path, _one_line(exc)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a JSON object, found {type(obj).__name__}")
    return obj


def _check_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(path, "not a state dict of named tensors")
    return obj


def _check_optim(path: Path, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or not {"state", "param_groups"} <= obj.keys():
        raise CheckpointError(path, "not an optimiser state (no state / param_groups)")
    return obj


def _check_torch_rng(path: Path, obj: Any) -> torch.Tensor:
    ref = torch.get_rng_state()
    if not isinstance(obj, torch.Tensor) or obj.dtype != ref.dtype or obj.shape != ref.shape:
        raise CheckpointError(path, "not a torch RNG state")
    return obj


def _check_numpy_rng(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    try:  # the generator validates its own state: exactly what a resume will do with it
        np.random.default_rng().bit_generator.state = obj
    except Exception as exc:
        raise CheckpointError(path, f"not a numpy RNG state: {_one_line(exc)}") from None
    return obj


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RunFolder:
    """One run folder, locked for this process until :meth:`close` (or a ``with`` block ends)."""

    def __init__(
        self,
        root: Path,
        dataset_keys: tuple[str, ...] = DATASET_KEYS,
        validation_keys: tuple[str, ...] = DATASET_KEYS,
    ) -> None:
        self.root = Path(root)
        self.dataset_keys, self.validation_keys = dataset_keys, validation_keys
        self.ckpt = self.root / "checkpoints"
        try:
            self.root.mkdir(parents=True)
            fsync_dir(self.root.parent)  # the new run folder's entry is durable too
        except FileExistsError:
            pass
        self._lock_fd: int | None = None
        self._lock()
        try:
            if not self.ckpt.exists():
                self.ckpt.mkdir()
                fsync_dir(self.root)
            for stale in self.ckpt.glob("*.tmp"):  # an iteration a kill interrupted
                shutil.rmtree(stale, ignore_errors=True)
        except BaseException:
            self.close()
            raise

    # -- the lock ---------------------------------------------------------------------------------
    def _lock(self) -> None:
        path = self.root / ".lock"
        # No O_TRUNC: the holder's PID must survive a second trainer's attempt.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(
                f"{self.root} is in use by another trainer (pid {holder}, holding "
                f"{path}); wait for it to finish or pick another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (the file stays: deleting it would race a waiting trainer)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- config -----------------------------------------------------------------------------------
    def save_config(self, resolved: dict[str, Any], text: str | None = None) -> None:
        """The resolved config as JSON (what ``--resume`` compares), and the user's YAML."""
        atomic_write_text(self.root / "config.json", json.dumps(resolved, indent=1))
        if text is not None:
            atomic_write_text(self.root / "config.yaml", text)

    def stored_config(self) -> dict[str, Any] | None:
        """The config the run was started with: config.json, else (older runs) config.yaml;
        None when neither exists."""
        path = self.root / "config.json"
        if path.exists():
            try:
                return _parse_json(path, _read(path))
            except CheckpointError as exc:
                first: CheckpointError | None = exc
        else:
            first = None
        yaml_path = self.root / "config.yaml"
        if yaml_path.exists():
            import yaml

            try:
                raw = yaml.safe_load(_read(yaml_path).decode())
            except (UnicodeDecodeError, yaml.YAMLError) as exc:
                raise first or CheckpointError(yaml_path, _one_line(exc)) from None
            if isinstance(raw, dict):
                return raw
            raise first or CheckpointError(yaml_path, "not a mapping")
        if first is not None:
            raise first
        return None

    # -- progress ---------------------------------------------------------------------------------
    def _iteration_dirs(self) -> int:
        """How many consecutive complete iteration folders there are from iter_0000."""
        n = 0
        while (self.ckpt / f"iter_{n:04d}").is_dir():
            n += 1
        return n

    def has_progress(self) -> bool:
        return (self.root / "state.json").exists() or self._iteration_dirs() > 0

    def completed(self) -> int:
        """Iterations state.json records as done (0 for a new folder)."""
        path = self.root / "state.json"
        if not path.exists():
            return 0
        state = _parse_json(path, _read(path))
        done = state.get("completed")
        if not isinstance(done, int) or isinstance(done, bool) or done < 0:
            raise CheckpointError(path, f"'completed' is {done!r}, not a count")
        return done

    def resume_point(
        self,
        diffs: list[str],
        may_differ: tuple[str, ...],
        iterations: int,
        iterations_key: str,
        log: Callable[[str], None],
    ) -> int:
        """Where ``--resume`` goes on: after the last intact iteration. Refuses a config that
        differs outside ``may_differ`` (``diffs``, from the caller's comparison) or that would
        shorten the run below the iterations done (:class:`ConfigMismatch`); logs one line on
        where the run continues and why."""
        if diffs:
            raise ConfigMismatch(
                f"{self.root}: --resume with a config that differs from the one the run started "
                f"with: {'; '.join(diffs)}; only {' and '.join(may_differ)} may change on resume"
            )
        start, problem = self.intact()
        if iterations < start:
            raise ConfigMismatch(
                f"{self.root} holds {start} iterations; --resume cannot shorten it to "
                f"{iterations_key}={iterations}"
            )
        if problem is not None:  # one line: what was wrong, and where the run goes on from
            log(
                f"{problem}: resuming {self.root} after iteration {start - 1}, the last intact "
                f"one (iteration {start} starts again from its RNG state)"
                if start
                else f"{problem}: starting {self.root} again (no intact iteration)"
            )
            self.mark_completed(start)
        elif start:
            log(f"resuming {self.root} after iteration {start - 1}")
        return start

    def begin(
        self,
        resume: bool,
        differences: Callable[[dict[str, Any]], list[str]],
        may_differ: tuple[str, ...],
        iterations: int,
        iterations_key: str,
        what: str,
        log: Callable[[str], None],
    ) -> int:
        """Where a run starts: 0 for a new run (a folder holding progress is refused: it is
        ``what``, e.g. "a policy run"), or with ``resume`` after the last intact iteration, the
        stored config compared by ``differences(stored)`` (:meth:`resume_point`)."""
        if not resume:
            if self.has_progress():
                raise VmpcError(
                    f"{self.root} already holds {what}: use --resume to continue it or another "
                    "--out"
                )
            return 0
        stored = self.stored_config()
        diffs = [] if stored is None else differences(stored)
        return self.resume_point(diffs, may_differ, iterations, iterations_key, log)

    def mark_completed(self, n: int) -> None:
        atomic_write_text(self.root / "state.json", json.dumps({"completed": n}))

    def intact(self) -> tuple[int, CheckpointError | None]:
        """How many iterations a resume can build on, and the first problem found (None when
        every recorded iteration reads back whole).

        Iterations 0..k-1 are intact when each of their files matches its manifest hash and
        parses; k stops at the first that does not. When state.json itself is unreadable, the
        complete iteration folders stand in for it (each was renamed into place only when whole).
        """
        problem: CheckpointError | None = None
        try:
            done = self.completed()
        except CheckpointError as exc:
            problem, done = exc, self._iteration_dirs()
        for n in range(done):
            try:
                self.verify_iteration(n)
            except CheckpointError as exc:
                return n, problem or exc
        return done, problem

    # -- iterations -------------------------------------------------------------------------------
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
        files = {
            "dataset.npz": _npz_bytes(dataset),
            "model.pt": _torch_bytes(model),
            "optim.pt": _torch_bytes(optim),
            "torch_rng.pt": _torch_bytes(torch_rng),
            "rng.json": json.dumps(rng).encode(),
            "metrics.json": json.dumps(metrics).encode(),
        }
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        manifest = {name: _sha256(data) for name, data in files.items()}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        fsync_dir(tmp)
        if final.exists():  # redoing an iteration after a fall-back
            shutil.rmtree(final)
            fsync_dir(self.ckpt)
        os.replace(tmp, final)
        fsync_dir(self.ckpt)  # the rename is durable before state.json points past it
        self.mark_completed(n + 1)

    def _read_iteration(self, n: int) -> tuple[Path, dict[str, bytes]]:
        d = self.ckpt / f"iter_{n:04d}"
        if not d.is_dir():
            raise CheckpointError(d, "missing")
        files = {name: _read(d / name) for name in ITERATION_FILES}
        manifest_path = d / "manifest.json"
        if manifest_path.exists():  # folders written before manifests had none
            manifest = _parse_json(manifest_path, _read(manifest_path))
            for name, data in files.items():
                if manifest.get(name) != _sha256(data):
                    raise CheckpointError(d / name, "contents do not match manifest.json")
        return d, files

    def load_iteration(self, n: int, *, dataset: bool = True) -> dict[str, Any]:
        """Iteration n's files, each checked; a damaged one raises CheckpointError."""
        d, files = self._read_iteration(n)
        out: dict[str, Any] = {
            "model": _check_state_dict(
                d / "model.pt", _parse_torch(d / "model.pt", files["model.pt"])
            ),
            "optim": _check_optim(d / "optim.pt", _parse_torch(d / "optim.pt", files["optim.pt"])),
            "torch_rng": _check_torch_rng(
                d / "torch_rng.pt", _parse_torch(d / "torch_rng.pt", files["torch_rng.pt"])
            ),
            "rng": _check_numpy_rng(d / "rng.json", _parse_json(d / "rng.json", files["rng.json"])),
            "metrics": _parse_json(d / "metrics.json", files["metrics.json"]),
        }
        if "samples" not in out["metrics"]:
            raise CheckpointError(d / "metrics.json", "no 'samples' entry")
        if dataset:
            out["dataset"] = _parse_npz(d / "dataset.npz", files["dataset.npz"], self.dataset_keys)
        return out

    def verify_iteration(self, n: int) -> None:
        self.load_iteration(n)

    # -- validation set ---------------------------------------------------------------------------
    def save_validation(self, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.ckpt / "validation.npz", _npz_bytes(arrays))

    def load_validation(self) -> dict[str, np.ndarray] | None:
        """The stored validation set, None when there is none; CheckpointError when damaged."""
        path = self.ckpt / "validation.npz"
        if not path.exists():
            return None
        return _parse_npz(path, _read(path), self.validation_keys)

    def drop_validation(self) -> None:
        (self.ckpt / "validation.npz").unlink(missing_ok=True)
