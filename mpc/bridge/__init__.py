"""The ZeroMQ bridge: stream a running closed loop's state out, take commands and wrenches in.

* :mod:`.server`: :class:`~mpc.bridge.server.BridgeServer` hooks into a
  :class:`~mpc.loop.ClosedLoop` (it needs the controller, so it imports Crocoddyl);
* :mod:`.client`: :class:`~mpc.bridge.client.BridgeClient` for scripts and the CLI (zmq and
  msgpack only, no robotics stack);
* :mod:`.messages`: the wire format; :mod:`.keys`: CURVE keys; :mod:`.spec`: the config section.

docs/bridge.md describes all of it. This package imports only its config section, so
``mpc.config`` can compose it at no cost.
"""

from .spec import BridgeLimits, BridgeSpec, CurveSpec

__all__ = ["BridgeLimits", "BridgeSpec", "CurveSpec"]
