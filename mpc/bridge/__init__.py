"""The ZeroMQ bridge: stream a running closed loop's state out, take commands and wrenches in.

Server side: :class:`BridgeServer` hooks into a :class:`~mpc.runner.ClosedLoop`. Client side:
:class:`BridgeClient`. The wire format is in :mod:`.messages`, the config section in
:mod:`.spec`, CURVE keys in :mod:`.keys`; docs/bridge.md describes all of it.
"""

from .client import BridgeClient, BridgeTimeout, CommandRefused
from .keys import ClientKeys, KeyFileError, generate_keypair
from .messages import SCHEMA_VERSION, BadMessage
from .server import BridgeError, BridgeServer
from .spec import BridgeLimits, BridgeSpec, CurveSpec

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
