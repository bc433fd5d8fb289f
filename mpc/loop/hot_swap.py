"""Swapping the terminal cost while the loop runs.

A request names ``none``, ``quadratic`` or a value-model path (:data:`mpc.config.TerminalKind`).
A worker thread prepares it (load, validate, build the Crocoddyl model, warm up) so the control
loop never waits on a file; the loop installs a prepared terminal at a tick boundary, between two
solves. In ``lockstep`` timing the loop waits for the worker at that boundary (sim time is frozen
meanwhile), so runs stay deterministic; in ``wallclock`` timing it installs whatever is ready and
keeps going.

A refused request changes nothing: the old terminal keeps running, and the event says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import crocoddyl
import numpy as np

from ..errors import VmpcError
from ..ocp import PreparedTerminal, ReachingOCP, TerminalCost

__all__ = [
    "Preparer",
    "Request",
    "SwapCallback",
    "SwapEvent",
    "TerminalSwapper",
    "preload_swap_support",
]

log = logging.getLogger("vmpc.swap")

# What a request names: a config's parsed terminal kind, or a client's raw string (the preparer
# parses it and refuses what is neither a built-in terminal nor a path).
Request = str | Path
_HISTORY = 4  # earlier terminals kept to revert to


@dataclass
class SwapEvent:
    t: float  # [s] sim time of the request
    spec: str  # what was asked: none | quadratic | a path
    model_id: str  # what it resolved to (file name and weight hash for a model)
    accepted: bool
    reason: str  # empty when accepted and not forced
    forced: bool = False
    applied_t: float | None = None  # [s] sim time it went live

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Preparer = Callable[[Request, bool, np.ndarray], PreparedTerminal]
SwapCallback = Callable[[SwapEvent], None]


def preload_swap_support(evaluator: str) -> None:
    """Import what a model swap needs now, before the loop runs. Only the TorchScript evaluator
    needs torch (the default path reads weights with safetensors), and a first such swap would
    otherwise import it (~1 s) on the swap worker thread, holding the GIL for stretches of up to
    ~300 ms while the loop runs (measured in wallclock timing)."""
    if evaluator != "torchscript":
        return
    try:
        import torch  # noqa: F401
    except ImportError:  # no learned values in this build: swaps to a path are refused anyway
        pass


class TerminalSwapper:
    """Owns the worker thread and the queue of requests of one closed loop's OCP."""

    def __init__(self, ocp: ReachingOCP, prepare: Preparer, wait_for_worker: bool) -> None:
        self._ocp = ocp
        self._prepare = prepare
        self._wait = wait_for_worker
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmpc-swap")
        self._lock = threading.Lock()
        self._pending: list[
            tuple[float, Request, bool, Future[PreparedTerminal], SwapCallback | None]
        ] = []
        self.events: list[SwapEvent] = []
        self._history: list[tuple[TerminalCost, crocoddyl.ActionModelAbstract]] = []
        self.reverts = 0  # broken terminals swapped back at runtime

    def request(
        self,
        t: float,
        spec: Request,
        x_now: np.ndarray,
        force: bool = False,
        callback: SwapCallback | None = None,
    ) -> None:
        """Queue a swap; thread-safe. ``x_now`` is the state the warm-up evaluates at."""
        fut = self._pool.submit(self._prepare, spec, force, x_now.copy())
        with self._lock:
            self._pending.append((t, spec, force, fut, callback))

    def poll(self, t: float) -> None:
        """At a tick boundary: install every finished request, in request order."""
        with self._lock:
            if not self._pending:
                return
            pending = list(self._pending)
        done = 0
        for t_req, spec, force, fut, callback in pending:
            if self._wait:
                fut.exception()  # blocks until the worker is done with it
            elif not fut.done():
                break
            event = self._finish(t, t_req, spec, force, fut)
            self.events.append(event)
            done += 1
            if callback is not None:
                try:
                    callback(event)
                except Exception:  # a client's callback must never break the loop
                    log.exception("swap callback failed")
        with self._lock:
            del self._pending[:done]

    def _finish(
        self, t: float, t_req: float, request: Request, force: bool, fut: Future[PreparedTerminal]
    ) -> SwapEvent:
        spec = str(request)
        exc = fut.exception()
        if exc is not None:
            reason = str(exc) if isinstance(exc, VmpcError) else f"{type(exc).__name__}: {exc}"
            reason = " ".join(reason.split())  # always one line
            log.warning("swap to %s refused: %s", spec, reason)
            return SwapEvent(t_req, spec, spec, False, reason, force)
        prepared = fut.result()
        self.install(prepared.terminal, prepared.model)
        if prepared.note:
            log.warning("swap to %s: %s", prepared.model_id, prepared.note)
        return SwapEvent(t_req, spec, prepared.model_id, True, prepared.note, force, t)

    def install(self, terminal: TerminalCost, model: crocoddyl.ActionModelAbstract) -> None:
        """Make ``terminal`` live between two solves, remembering the one it replaces."""
        self._history.append((self._ocp.terminal, self._ocp.problem.terminalModel))
        del self._history[:-_HISTORY]
        self._ocp.set_terminal(terminal, model)

    def revert_broken(self, t: float, fallback: Callable[[], TerminalCost]) -> SwapEvent | None:
        """If the live terminal is :meth:`~mpc.ocp.TerminalCost.broken`, go back to the newest
        earlier terminal that is not (else to ``fallback()``); called by the loop between two
        solves. Returns the event, also kept in :attr:`events`."""
        broken = self._ocp.terminal
        if not broken.broken():
            return None
        while self._history and self._history[-1][0].broken():
            self._history.pop()
        if self._history:
            terminal, model = self._history.pop()
        else:
            terminal = fallback()
            model = terminal.make_model(self._ocp)
        self._ocp.set_terminal(terminal, model)
        reason = f"{broken.label} went non-finite at runtime; reverted to {terminal.label}"
        log.warning("t=%.3f s: %s", t, reason)
        event = SwapEvent(t, "revert", terminal.label, True, reason, False, t)
        self.events.append(event)
        self.reverts += 1
        return event

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
