"""Preparing value-model swaps in a separate process, so that no load holds the loop's GIL.

Loading and checking a value file (open, size caps, zip parse, sha256, safetensors, metadata,
the fingerprint, then V, Vx and Vxx at the current state and at ``value.validation_states``
sampled states) is ~8 ms of Python for the shipped model. On a worker thread that time is taken
from the loop in GIL slices; here it runs on the other core. The child is spawned, not forked
(the parent runs PyBullet, ZeroMQ and OpenMP threads), builds its own robot and OCP from the
config, and runs exactly :func:`~mpc.value.terminal.prepare_value_terminal`, the code
``vmpc value check`` runs. It answers with data only: the checked metadata as JSON and the
weights as safetensors bytes (nothing is pickled on the way back). The parent then builds the
Crocoddyl terminal from them (~0.5 ms, :func:`~mpc.value.terminal.install_validated_value`).

A request still unanswered at its deadline is refused and the child is killed; the next request
starts a fresh one. The child's start-up (~1.5 s of imports) is not charged to a request:
:meth:`SwapProcess.start` is called when swaps become possible (a swap schedule, a bridge).

Only the fast evaluator is served here: the TorchScript evaluator needs the module loaded in
the loop's own process, so its swaps stay on the worker thread.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from ..config import Config
from ..errors import SwapRefused
from ..ocp import NoTerminal, ReachingOCP
from ..robot_model import build_robot
from ..value.artifact import ValueMetadata, ValueModel
from ..value.terminal import LearnedValueTerminal, prepare_value_terminal
from .hot_swap import Deadline

__all__ = ["STARTUP_TIMEOUT_S", "SwapProcess"]

log = logging.getLogger("vmpc.swap")

STARTUP_TIMEOUT_S = 120.0  # [s] imports on a busy 2-core machine; not charged to a request
_STOP = b'{"stop": true}'


class SwapProcess:
    """One child process that prepares value swaps for one closed loop; thread-safe."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self.restarts = 0  # children killed for a timeout or lost

    def start(self, wait: bool = False) -> None:
        """Spawn the child if none is running. Returns at once (the child imports on its own),
        or with ``wait`` once it is ready to serve; raises SwapRefused if it cannot start."""
        with self._lock:
            self._start_locked()
            if wait:
                self._await_ready_locked("the swap process")

    def _await_ready_locked(self, what: object) -> None:
        assert self._conn is not None and self._proc is not None
        if self._ready:
            return
        conn = self._conn
        try:
            ok = conn.poll(STARTUP_TIMEOUT_S) and conn.recv_bytes() == b'{"ready": true}'
        except (EOFError, OSError):
            ok = False
        if not ok:
            code = self._proc.exitcode
            self._kill_locked()
            raise SwapRefused(f"{what}: the swap process did not start (exit code {code})")
        self._ready = True

    def _start_locked(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_serve, args=(child, self._cfg), name="vmpc-swap-prepare", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False

    def _kill_locked(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5.0)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn, self._ready = None, None, False

    def prepare(
        self,
        path: Path,
        force: bool,
        x: np.ndarray,
        target: np.ndarray,
        deadline: Deadline,
    ) -> tuple[ValueModel, str]:
        """Have the child load and validate ``path``; return (ValueModel, note) or raise
        SwapRefused. Blocks the calling (worker) thread, never holding the GIL while waiting."""
        with self._lock:
            self._start_locked()
            if not self._ready:
                deadline.at = math.inf  # not refused by the loop while the child starts
                self._await_ready_locked(path)
                # Start-up is not the file's fault: the request's clock starts now.
                deadline.at = time.monotonic() + deadline.timeout_s
            assert self._conn is not None
            conn = self._conn
            request = {
                "path": str(path),
                "force": force,
                "x": np.asarray(x, dtype=float).tolist(),
                "target": np.asarray(target, dtype=float).tolist(),
            }
            try:
                conn.send_bytes(json.dumps(request).encode())
                if not conn.poll(max(0.0, deadline.at - time.monotonic())):
                    self._kill_locked()
                    self.restarts += 1
                    raise SwapRefused(deadline.reason())
                header = json.loads(conn.recv_bytes())
                weights = conn.recv_bytes() if header.get("ok") else b""
            except (EOFError, OSError) as exc:
                code = self._proc.exitcode if self._proc is not None else None
                self._kill_locked()
                self.restarts += 1
                raise SwapRefused(
                    f"{path}: the swap process was lost ({type(exc).__name__}, exit code {code})"
                ) from None
        if not header.get("ok"):
            raise SwapRefused(str(header.get("reason", "refused")))
        model = ValueModel(
            Path(header["path"]),
            None,
            ValueMetadata.model_validate_json(header["metadata"]),
            load_safetensors(weights),
            header["file_sha256"],
            bool(header["trusted"]),
        )
        return model, str(header["note"])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._proc is not None and self._proc.is_alive():
                try:
                    self._conn.send_bytes(_STOP)
                except OSError:
                    pass
                self._proc.join(timeout=2.0)
            self._kill_locked()


def _serve(conn: Connection, cfg: Config) -> None:
    """The child: build the OCP once, then answer requests until told to stop or orphaned."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    _, robot = build_robot(cfg)
    x0 = np.concatenate([np.asarray(cfg.robot.q0, float), np.zeros(robot.nq)])
    ocp = ReachingOCP(robot, cfg.ocp, np.asarray(cfg.task.target), NoTerminal(), x0=x0, nthreads=1)
    conn.send_bytes(b'{"ready": true}')
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        if msg == _STOP:
            return
        req = json.loads(msg)
        try:
            ocp.set_target(np.asarray(req["target"], dtype=float))
            prepared = prepare_value_terminal(
                Path(req["path"]), bool(req["force"]), np.asarray(req["x"], dtype=float), cfg, ocp
            )
            term = prepared.terminal
            assert isinstance(term, LearnedValueTerminal)
            model = term.model
            header: dict[str, Any] = {
                "ok": True,
                "path": str(model.path),
                "metadata": model.metadata.model_dump_json(),
                "file_sha256": model.file_sha256,
                "trusted": model.trusted,
                "note": prepared.note,
            }
            blob = save_safetensors(model.arrays)
        except SwapRefused as exc:
            header, blob = {"ok": False, "reason": str(exc)}, b""
        except Exception as exc:  # never let one bad file end the child
            header, blob = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}, b""
        conn.send_bytes(json.dumps(header).encode())
        if header["ok"]:
            conn.send_bytes(blob)
