"""Helpers of the bridge tests: a closed loop with a bridge running in a thread (loopback, random
ports, every wait bounded), condition waits instead of fixed sleeps, the CLI in-process and in
a subprocess, and small random-weight value artifacts."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from mpc.bridge.client import BridgeClient
from mpc.bridge.server import BridgeServer
from mpc.config import Config, load_config
from mpc.loop import ClosedLoop

from ..conftest import IIWA, ROOT, make_artifact

__all__ = [
    "IIWA",
    "PORTS",
    "ROOT",
    "RunningBridge",
    "free_ports",
    "make_artifact",
    "run_bridge",
    "vmpc_subprocess",
    "wait_state",
    "wait_until",
]

# Every socket on loopback (the bridge's default bind) and on a port the OS picks.
PORTS = ["bridge.state_port=0", "bridge.command_port=0", "bridge.wrench_port=0"]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (which is returned) or fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout:g} s: {what or predicate}")
        time.sleep(interval)


def wait_state(client: BridgeClient, pred: Callable[[dict], Any], timeout: float = 5.0) -> dict:
    """The first state (newest-first stream) for which ``pred`` holds, or fail."""
    deadline = time.monotonic() + timeout
    states = client.states(latest=True, timeout_s=timeout)
    try:
        for s in states:
            if pred(s):
                return s
            if time.monotonic() > deadline:
                pytest.fail(f"state condition not reached within {timeout:g} s (last: t={s['t']})")
    finally:
        states.close()
    raise AssertionError("unreachable: the state stream never ends")


class RunningBridge(SimpleNamespace):
    loop: ClosedLoop
    server: BridgeServer
    client: BridgeClient
    cfg: Config

    def stop(self):
        """Stop the loop; returns its RunResult (or re-raises what the loop raised)."""
        self.loop.stop_requested = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "the loop did not stop"
        if "error" in self.box:
            raise self.box["error"]
        return self.box["result"]


@contextmanager
def run_bridge(
    sets=(), duration=60.0, timing="wallclock", timeout_s=15.0
) -> Iterator[RunningBridge]:
    """A closed loop with a bridge, running in a thread until the block ends."""
    cfg = load_config(
        IIWA,
        [
            f"run.duration={duration}",
            f"mpc.timing={timing}",
            "disturbances.schedule=[]",
            *PORTS,
            *sets,
        ],
    )
    loop = ClosedLoop(cfg)
    try:
        server = BridgeServer(loop).attach()
    except BaseException:
        loop.close()
        raise
    box: dict = {}

    def run():
        try:
            box["result"] = loop.run(progress=False)
        except BaseException as exc:  # surfaced by stop()
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="closed-loop")
    thread.start()
    client = BridgeClient(server.endpoints["commands"], timeout_s=timeout_s)
    rb = RunningBridge(loop=loop, server=server, client=client, box=box, thread=thread, cfg=cfg)
    try:
        yield rb
    finally:
        loop.stop_requested = True
        thread.join(20)
        client.close()
        server.close()
        loop.close()


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (for a server in another process)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def vmpc_subprocess(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``vmpc ARGS`` as a real process (for the smoke tests of the entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "vmpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def vmpc_main(capsys) -> Callable[..., SimpleNamespace]:
    """Run a verb in-process: ``vmpc_main("status", ...)`` -> returncode, stdout, stderr."""
    from vmpc.cli import main

    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run
