"""The ZeroMQ bridge: stream a running closed loop's state out, take commands and wrenches in.

Server side: :class:`BridgeServer` hooks into a :class:`~mpc.runner.ClosedLoop`. Client side:
:class:`BridgeClient`. The wire format is in :mod:`.messages`, the config section in
:mod:`.spec`, CURVE keys in :mod:`.keys`; docs/bridge.md describes all of it.

Names are loaded on first use: mpc.config imports :mod:`.spec` from here, and every run would
otherwise pay for zmq, asyncio and msgpack (and the server needs mpc.config itself).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import BridgeClient, BridgeTimeout, CommandRefused
    from .keys import ClientKeys, KeyFileError, generate_keypair
    from .messages import SCHEMA_VERSION, BadMessage
    from .server import BridgeError, BridgeServer
    from .spec import BridgeLimits, BridgeSpec, CurveSpec

_WHERE = {
    "BridgeClient": "client", "BridgeTimeout": "client", "CommandRefused": "client",
    "ClientKeys": "keys", "KeyFileError": "keys", "generate_keypair": "keys",
    "SCHEMA_VERSION": "messages", "BadMessage": "messages",
    "BridgeError": "server", "BridgeServer": "server",
    "BridgeLimits": "spec", "BridgeSpec": "spec", "CurveSpec": "spec",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
