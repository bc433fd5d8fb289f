"""The ``bridge`` section of the run config: where the bridge listens and what it accepts.

Limits are checked on every message before anything reaches the loop; see docs/bridge.md.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from sim.specs import Strict

__all__ = ["BridgeSpec", "CurveSpec", "BridgeLimits"]

_TOPIC = re.compile(r"^[!-~]{1,64}$")  # printable ASCII, no space: the space ends the topic
_BIND = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,252})$")


class CurveSpec(Strict):
    """CURVE encryption with a ZAP allow-list. Both paths must be valid or the bridge refuses
    to start (fail closed)."""

    server_secret_key: str = Field(description="the server's secret certificate (*.key_secret)")
    clients_dir: str = Field(description="folder of allowed client public certificates (*.key)")


class BridgeLimits(Strict):
    """What a single command or wrench sample may ask for."""

    max_force_n: float = Field(default=200.0, gt=0, description="|force| of a push or sample [N]")
    max_torque_nm: float = Field(default=50.0, gt=0, description="|torque| [N m]")
    max_duration_s: float = Field(default=2.0, gt=0, description="duration of one push [s]")
    max_path_chars: int = Field(default=1024, ge=1, description="length of a swap_value path")
    # Limits in total, over every client: a client that reconnects (a new identity per command)
    # or sends many pushes at once cannot get more than these.
    global_rate_hz: float = Field(
        default=400.0, gt=0, description="sustained commands per second, all clients together"
    )
    global_burst: int = Field(
        default=100, ge=1, description="commands allowed back to back, all clients together"
    )
    max_clients: int = Field(
        default=256,
        ge=1,
        le=1 << 16,
        description="per-client rate-limit entries kept (least recently seen forgotten first)",
    )
    max_active_pushes: int = Field(
        default=8, ge=1, description="bridge pushes applied at the same time"
    )
    max_total_force_n: float = Field(
        default=400.0,
        gt=0,
        description="sum of |force| of the active bridge pushes and the streamed wrench [N]",
    )
    max_total_torque_nm: float = Field(
        default=100.0, gt=0, description="sum of |torque|, as max_total_force_n [N m]"
    )
    max_pending_bytes: int = Field(
        default=4 << 20,
        ge=1 << 16,
        description="bytes the command connections together may have sent that the server has "
        "not read yet (a multi-frame message is invisible until complete); above it the "
        "connection holding the most is closed",
    )
    max_connections: int = Field(
        default=256, ge=1, le=1 << 16, description="command connections open at the same time"
    )


class BridgeSpec(Strict):
    bind: str = Field(
        default="127.0.0.1",
        description="interface to bind; anything but loopback is an explicit choice",
    )
    state_port: int = Field(default=5555, ge=0, le=65535, description="PUB state stream (0: any)")
    command_port: int = Field(default=5556, ge=0, le=65535, description="ROUTER commands (0: any)")
    wrench_port: int = Field(default=5557, ge=0, le=65535, description="SUB wrench stream (0: any)")
    publish_every: int = Field(default=2, ge=1, description="sim ticks between state messages")
    topic: str = Field(default="vmpc.state", description="prefix of every state frame")
    conflate: bool = Field(
        default=True, description="PUB keeps only the newest state per subscriber"
    )
    max_message_bytes: int = Field(
        default=4096, ge=256, le=1 << 20, description="larger frames are answered with an error"
    )
    messages_per_tick: int = Field(
        default=4, ge=1, le=1000, description="command frames handled per control tick"
    )
    command_rate_hz: float = Field(default=200.0, gt=0, description="sustained commands per second")
    command_burst: int = Field(default=50, ge=1, description="commands allowed back to back")
    stale_after_s: float = Field(
        default=0.05,
        gt=0,
        description="a wrench stream with no sample this long [s of sim time] goes back to zero",
    )
    linger_ms: int = Field(
        default=100,
        ge=0,
        description="ZMQ_LINGER of every socket at close [ms]: how long "
        "unsent replies may delay shutdown",
    )
    limits: BridgeLimits = Field(default_factory=BridgeLimits)
    curve: CurveSpec | None = Field(default=None, description="null: no encryption")
    insecure: bool = Field(
        default=False,
        description="allow a non-loopback bind without CURVE (anyone who reaches the machine "
        "can push the arm)",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not _TOPIC.match(v):
            raise ValueError("must be 1-64 printable ASCII characters without spaces")
        return v

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        if not _BIND.match(v):
            raise ValueError(
                "an IPv4 address, interface name or '*', e.g. 127.0.0.1 (no scheme, no port)"
            )
        return v

    @model_validator(mode="after")
    def _distinct_ports(self) -> BridgeSpec:
        ports = [p for p in (self.state_port, self.command_port, self.wrench_port) if p != 0]
        if len(ports) != len(set(ports)):
            raise ValueError("state_port, command_port and wrench_port must differ (or be 0)")
        return self
