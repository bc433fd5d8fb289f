"""A Python client of the bridge: commands over a DEALER socket, the state stream, a wrench stream.

    with BridgeClient("tcp://127.0.0.1:5556") as c:
        c.push([30, 0, 0], duration=0.1)
        for s in c.states():          # newest state first, never a stale backlog
            print(s["t"], s["ee"])

Each command waits at most ``timeout_s`` for its reply and raises :class:`BridgeTimeout`
otherwise; a DEALER socket, unlike REQ, stays usable after a lost reply (late replies are
recognised by their id and dropped). A refused command raises :class:`CommandRefused`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import zmq

from ..errors import VmpcError
from .keys import ClientKeys
from .messages import SCHEMA_VERSION, BadMessage, decode, encode, parse_state

__all__ = [
    "BridgeClient",
    "BridgeTimeout",
    "CommandRefused",
    "DEFAULT_ADDRESS",
    "normalise_address",
]

DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"
_MAX_REPLY_BYTES = 1 << 20


class BridgeTimeout(VmpcError):
    """The server did not answer in time: it is not running, not reachable, or refuses our key."""

    def __init__(self, address: str, timeout_s: float, what: str = "no reply") -> None:
        self.address, self.timeout_s = address, timeout_s
        super().__init__(
            f"{what} from {address} within {timeout_s:g} s (is `vmpc sim --bridge` "
            f"running there, with matching keys?)"
        )


class CommandRefused(VmpcError):
    """The server answered with an error; ``reason`` is its one-line explanation."""

    def __init__(self, cmd: str, reason: str, reply: dict[str, Any]) -> None:
        self.cmd, self.reason, self.reply = cmd, reason, reply
        super().__init__(f"{cmd} refused: {reason}")


def normalise_address(address: str) -> str:
    """``host:port`` -> ``tcp://host:port``; a full endpoint is kept."""
    return address if "://" in address else f"tcp://{address}"


def _with_host(endpoint: str, like: str) -> str:
    """The port of ``endpoint`` (as the server bound it) on the host of ``like`` (as we reach
    it): a server bound to 0.0.0.0 or * is reached the way its command socket was."""
    port = endpoint.rsplit(":", 1)[1]
    return f"{like.rsplit(':', 1)[0]}:{port}"


class BridgeClient:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        keys: ClientKeys | None = None,
        *,
        timeout_s: float = 2.0,
        state_address: str | None = None,
        wrench_address: str | None = None,
        topic: str = "vmpc.state",
    ) -> None:
        self.address = normalise_address(address)
        self.keys = keys
        self.timeout_s = timeout_s
        self._state_address = normalise_address(state_address) if state_address else None
        self._wrench_address = normalise_address(wrench_address) if wrench_address else None
        self._topic = topic
        self._ctx = zmq.Context()
        self._ids = itertools.count(1)
        self._dealer = self._socket(zmq.DEALER)
        self._dealer.connect(self.address)
        self._wrench: zmq.Socket | None = None

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.linger = 0  # a client's unsent messages are worthless once it closes
        if self.keys is not None:
            self.keys.apply(sock)
        return sock

    def close(self) -> None:
        if self._ctx.closed:
            return
        self._ctx.destroy(linger=0)

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------------
    def request(self, cmd: str, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply; raises on timeout or refusal."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        rid = next(self._ids)
        msg = {"version": SCHEMA_VERSION, "id": rid, "cmd": cmd}
        msg.update({k: v for k, v in fields.items() if v is not None})
        try:
            self._dealer.send(encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # the send queue is full: nobody has been reading for a while
            raise BridgeTimeout(self.address, timeout, "cannot send") from None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._dealer.poll(max(1, int(left * 1000)), zmq.POLLIN):
                raise BridgeTimeout(self.address, timeout)
            frames = self._dealer.recv_multipart()
            try:
                reply = decode(frames[-1], _MAX_REPLY_BYTES)
            except BadMessage:
                continue
            if reply.get("id") not in (rid, None):
                continue  # the late reply of an earlier, timed-out request
            if not reply.get("ok"):
                raise CommandRefused(cmd, str(reply.get("error", "refused")), reply)
            return reply

    def push(
        self,
        force: Sequence[float],
        torque: Sequence[float] | None = None,
        duration: float = 0.1,
        link: str | None = None,
    ) -> dict[str, Any]:
        """A wrench [N, N m, world] on ``link`` (default the EE) for ``duration`` [s]."""
        return self.request(
            "push",
            force=[float(f) for f in force],
            torque=None if torque is None else [float(m) for m in torque],
            duration=float(duration),
            link=link,
        )

    def set_target(self, target: Sequence[float]) -> dict[str, Any]:
        return self.request("set_target", target=[float(x) for x in target])

    def swap_value(self, path: str, force: bool = False, timeout_s: float = 30.0) -> dict[str, Any]:
        """Swap the terminal to 'none', 'quadratic' or a value-model file. The reply comes once
        the server has validated and installed it (or refused it), hence the longer timeout."""
        return self.request("swap_value", timeout_s, path=str(path), force=bool(force))

    def clear_value(self, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.request("clear_value", timeout_s)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def pause(self) -> dict[str, Any]:
        return self.request("pause")

    def resume(self) -> dict[str, Any]:
        return self.request("resume")

    # -- streams ----------------------------------------------------------------------------------
    def _discover(self, kind: str) -> str:
        st = self.status()
        self._topic = st.get("topic", self._topic)
        return _with_host(st["endpoints"][kind], self.address)

    def states(
        self, latest: bool = True, timeout_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """State messages as dicts (schema in docs/bridge.md). ``latest=True`` conflates on our
        side too, so a slow reader always gets the newest state, never a backlog. Raises
        :class:`BridgeTimeout` when no state arrives for ``timeout_s``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        address = self._state_address or self._discover("state")
        sub = self._socket(zmq.SUB)
        try:
            if latest:
                sub.conflate = 1  # must be set before connect; single-frame messages only
            else:
                sub.rcvhwm = 10000
            sub.setsockopt(zmq.SUBSCRIBE, self._topic.encode() + b" ")
            sub.connect(address)
            while True:
                if not sub.poll(max(1, int(timeout * 1000)), zmq.POLLIN):
                    raise BridgeTimeout(address, timeout, "no state")
                try:
                    yield parse_state(sub.recv())
                except BadMessage:
                    continue
        finally:
            sub.close(linger=0)

    def send_wrench(
        self,
        force: Sequence[float],
        torque: Sequence[float] | None = None,
        link: str | None = None,
        t: float | None = None,
    ) -> None:
        """One sample of a streamed wrench [N, N m, world]; never blocks. The server keeps the
        latest and zeroes the stream when samples stop for ``bridge.stale_after_s``."""
        if self._wrench is None:
            address = self._wrench_address or self._discover("wrench")
            self._wrench = self._socket(zmq.PUB)
            self._wrench.conflate = 1  # a late sample is worthless: keep only the newest
            self._wrench.connect(address)
        msg: dict[str, Any] = {
            "version": SCHEMA_VERSION,
            "t": time.time() if t is None else t,
            "force": [float(f) for f in force],
        }
        if torque is not None:
            msg["torque"] = [float(m) for m in torque]
        if link is not None:
            msg["link"] = link
        try:
            self._wrench.send(encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass
