"""Swapping the terminal cost while the loop runs.

A request names ``none``, ``quadratic`` or a value-model path (:data:`mpc.config.TerminalKind`).
A worker thread prepares it (load, validate, build the Crocoddyl model, warm up) so the control
loop never waits on a file; the loop installs a prepared terminal at a tick boundary, between two
solves. In ``lockstep`` timing the loop waits for the worker at that boundary (sim time is frozen
meanwhile), so runs stay deterministic; in ``wallclock`` timing it installs whatever is ready and
keeps going.

The worker shares the GIL with the loop. Python hands the GIL to a waiting thread only every
``sys.getswitchinterval()`` (5 ms by default), so a prepare of ~8 ms of Python would hold a 1 kHz
loop for up to 5 ms at a time. While a prepare runs the worker lowers the interval to
:data:`SWAP_SWITCH_INTERVAL_S`, which bounds any one wait of the loop to about that (measured by
``vmpc bench swap``); the default path calls no long C routine that keeps the GIL (safetensors
and numpy on tiny arrays). The TorchScript evaluator's ``torch.jit.load`` is one such routine:
its swaps still stall the loop for the load (opt-in, trusted files only).

A prepare that takes longer than ``value.load_timeout_s`` is refused: the loop stops waiting for
it at the timeout, and the preparer gives up at its next checkpoint (:class:`Deadline`).

A refused request changes nothing: the old terminal keeps running, and the event says why.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import crocoddyl
import numpy as np

from ..errors import SwapRefused, VmpcError
from ..ocp import PreparedTerminal, ReachingOCP, TerminalCost

__all__ = [
    "SWAP_SWITCH_INTERVAL_S",
    "Deadline",
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
SWAP_SWITCH_INTERVAL_S = 2e-4  # [s] GIL switch interval while a swap is being prepared


class Deadline:
    """When a prepare must be done by (``time.monotonic()`` seconds); preparers call
    :meth:`check` between stages so a refused slow load stops using the CPU soon after."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self.timeout_s = timeout_s
        self.what = what
        self.at = time.monotonic() + timeout_s

    def expired(self) -> bool:
        return time.monotonic() > self.at

    def reason(self) -> str:
        return (
            f"{self.what}: preparing took longer than {self.timeout_s:g} s (value.load_timeout_s)"
        )

    def check(self) -> None:
        if self.expired():
            raise SwapRefused(self.reason())


NO_DEADLINE = Deadline(float("inf"), "")


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


Preparer = Callable[[Request, bool, np.ndarray, Deadline], PreparedTerminal]
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

    def __init__(
        self,
        ocp: ReachingOCP,
        prepare: Preparer,
        wait_for_worker: bool,
        timeout_s: float = float("inf"),
    ) -> None:
        self._ocp = ocp
        self._prepare = prepare
        self._wait = wait_for_worker
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmpc-swap")
        self._lock = threading.Lock()
        self._pending: list[
            tuple[float, Request, bool, Future[PreparedTerminal], Deadline, SwapCallback | None]
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
        """Queue a swap; thread-safe. ``x_now`` is the state the warm-up evaluates at. The
        timeout runs from now: a request queued behind a slow one is charged for the wait."""
        deadline = Deadline(self._timeout_s, str(spec))
        fut = self._pool.submit(self._run, spec, force, x_now.copy(), deadline)
        with self._lock:
            self._pending.append((t, spec, force, fut, deadline, callback))

    def _run(
        self, spec: Request, force: bool, x: np.ndarray, deadline: Deadline
    ) -> PreparedTerminal:
        """On the worker thread: one prepare, with the GIL handed to the loop often."""
        deadline.check()  # it may have waited its whole budget behind another request
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWAP_SWITCH_INTERVAL_S))
        try:
            return self._prepare(spec, force, x, deadline)
        finally:
            sys.setswitchinterval(previous)

    def poll(self, t: float) -> None:
        """At a tick boundary: install every finished request, in request order."""
        with self._lock:
            if not self._pending:
                return
            pending = list(self._pending)
        done = 0
        for t_req, spec, force, fut, deadline, callback in pending:
            if self._wait:  # block until the worker is done with it, or the timeout
                while not (fut.done() or deadline.expired()):
                    # In steps: the deadline moves (it stands still while a swap process starts).
                    step = min(max(0.0, deadline.at - time.monotonic()), 0.1)
                    try:
                        fut.exception(timeout=step)
                    except FutureTimeout:
                        pass
            elif not (fut.done() or deadline.expired()):
                break
            if fut.done():
                event = self._finish(t, t_req, spec, force, fut)
            else:  # the worker stops at its next checkpoint; its result is never installed
                log.warning("swap to %s refused: %s", spec, deadline.reason())
                event = SwapEvent(t_req, str(spec), str(spec), False, deadline.reason(), force)
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
