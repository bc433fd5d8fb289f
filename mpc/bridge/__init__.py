"""The ZeroMQ bridge: stream a running closed loop's state out, take commands and wrenches in.

Server side: :class:`BridgeServer` hooks into a :class:`~mpc.runner.ClosedLoop`. Client side:
:class:`BridgeClient`. The wire format is in :mod:`.messages`, the config section in
:mod:`.spec`, CURVE keys in :mod:`.keys`; docs/bridge.md describes all of it.
"""

from typing import TYPE_CHECKING, Any

from .client import BridgeClient, BridgeTimeout, CommandRefused
from .keys import ClientKeys, KeyFileError, generate_keypair
from .messages import SCHEMA_VERSION, BadMessage
from .spec import BridgeLimits, BridgeSpec, CurveSpec

if TYPE_CHECKING:
    from .server import BridgeError, BridgeServer


def __getattr__(name: str) -> Any:
    # The server needs the controller, which needs mpc.config, which needs .spec from here:
    # loaded on first use so that mpc.config can import this package.
    if name in ("BridgeError", "BridgeServer"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "SCHEMA_VERSION",
    "BadMessage",
    "BridgeClient",
    "BridgeError",
    "BridgeLimits",
    "BridgeServer",
    "BridgeSpec",
    "BridgeTimeout",
    "ClientKeys",
    "CommandRefused",
    "CurveSpec",
    "KeyFileError",
    "generate_keypair",
]
