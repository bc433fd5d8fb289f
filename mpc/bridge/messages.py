"""Wire format of the bridge: msgpack maps, one frame each, checked against strict schemas.

Every map carries ``version`` (:data:`SCHEMA_VERSION`). Commands name themselves with ``cmd``
and may carry an ``id`` that the reply echoes. Decoding never unpickles anything and never
trusts a size, a type or a number: a frame that is too large, not msgpack, not a map, of another
version, with an unknown command or field, a wrong type or a non-finite number raises
:class:`BadMessage` with a one-line reason. Limits that depend on the run (force, workspace,
rate, ...) are checked by the server, after the schema.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgpack
from pydantic import ConfigDict, Field, ValidationError

from sim.specs import Strict

from ..errors import VmpcError

__all__ = [
    "SCHEMA_VERSION",
    "BadMessage",
    "Command",
    "PushCommand",
    "SetTargetCommand",
    "SwapValueCommand",
    "ClearValueCommand",
    "StatusCommand",
    "PauseCommand",
    "ResumeCommand",
    "COMMANDS",
    "WrenchSample",
    "encode",
    "decode",
    "parse_command",
    "parse_wrench",
    "make_reply",
    "state_frame",
    "parse_state",
    "check_wrench",
]

SCHEMA_VERSION = 1
_ID_LIMIT = 2**53  # request ids stay exact in every msgpack/JSON client

Vec3f = Annotated[list[float], Field(min_length=3, max_length=3)]
RequestId = (
    Annotated[int, Field(ge=-_ID_LIMIT, le=_ID_LIMIT)] | Annotated[str, Field(max_length=64)]
)
LinkName = Annotated[str, Field(min_length=1, max_length=128)]


class BadMessage(VmpcError):
    """A frame that does not decode or does not match its schema; ``request_id`` is echoed in
    the error reply when it could be read."""

    def __init__(self, reason: str, request_id: int | str | None = None) -> None:
        self.reason, self.request_id = reason, request_id
        super().__init__(reason)


class _Message(Strict):
    # On top of the config base (extra fields and NaN/inf are errors): no "1" -> 1.0 or
    # 1.0 -> True coercion from the wire, and a parsed message is immutable.
    model_config = ConfigDict(strict=True, frozen=True)

    version: Literal[1]


class _Command(_Message):
    id: RequestId | None = None


class PushCommand(_Command):
    """A constant wrench on a link for ``duration`` [s], starting at the tick it is read."""

    cmd: Literal["push"]
    force: Vec3f  # [N] world frame
    torque: Vec3f = [0.0, 0.0, 0.0]  # [N m] world frame
    duration: float = Field(gt=0)  # [s] of sim time
    link: LinkName | None = None  # default: the EE link


class SetTargetCommand(_Command):
    cmd: Literal["set_target"]
    target: Vec3f  # [m] world frame, inside task.workspace


class SwapValueCommand(_Command):
    """A terminal: 'none', 'quadratic' or a value-model path inside value.allowed_dirs."""

    cmd: Literal["swap_value"]
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    force: bool = False  # accept a task-fingerprint mismatch


class ClearValueCommand(_Command):
    cmd: Literal["clear_value"]  # back to the configured terminal


class StatusCommand(_Command):
    cmd: Literal["status"]


class PauseCommand(_Command):
    cmd: Literal["pause"]  # wallclock timing only


class ResumeCommand(_Command):
    cmd: Literal["resume"]


Command = (
    PushCommand
    | SetTargetCommand
    | SwapValueCommand
    | ClearValueCommand
    | StatusCommand
    | PauseCommand
    | ResumeCommand
)
COMMANDS: dict[str, type[_Command]] = {
    "push": PushCommand,
    "set_target": SetTargetCommand,
    "swap_value": SwapValueCommand,
    "clear_value": ClearValueCommand,
    "status": StatusCommand,
    "pause": PauseCommand,
    "resume": ResumeCommand,
}


class WrenchSample(_Message):
    """One sample of a streamed wrench; the latest sample wins until it goes stale."""

    t: float  # [s] the sender's clock (time.time() by default); older samples are dropped
    force: Vec3f  # [N] world frame
    torque: Vec3f = [0.0, 0.0, 0.0]  # [N m] world frame
    link: LinkName | None = None  # default: the EE link


# -- encoding ------------------------------------------------------------------------------------
def encode(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(frame: bytes, max_bytes: int) -> dict[str, Any]:
    """msgpack bytes -> a map with string keys, or :class:`BadMessage`."""
    if len(frame) > max_bytes:
        raise BadMessage(f"message of {len(frame)} bytes is larger than the limit of {max_bytes}")
    try:
        obj = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, StackError, Unicode...)
        raise BadMessage(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise BadMessage("a message must be a msgpack map with string keys")
    return obj


def _request_id(obj: dict[str, Any]) -> int | str | None:
    rid = obj.get("id")
    if type(rid) is int and abs(rid) <= _ID_LIMIT or type(rid) is str and len(rid) <= 64:
        return rid
    return None


def _check_version(obj: dict[str, Any], rid: int | str | None) -> None:
    version = obj.get("version")
    if type(version) is not int:  # bool and float would compare equal to 1
        raise BadMessage("missing or non-integer 'version'", rid)
    if version != SCHEMA_VERSION:
        raise BadMessage(
            f"schema version {version} is not supported (this server speaks {SCHEMA_VERSION})", rid
        )


def _one_line(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    text = f"{where}: {msg}" if where else msg
    return " ".join(text.split())[:200]


def parse_command(frame: bytes, max_bytes: int) -> Command:
    obj = decode(frame, max_bytes)
    rid = _request_id(obj)
    _check_version(obj, rid)
    name = obj.get("cmd")
    model = COMMANDS.get(name) if isinstance(name, str) else None
    if model is None:
        shown = repr(name)[:40] if name is not None else "none"
        raise BadMessage(f"unknown command {shown}; commands are: {', '.join(COMMANDS)}", rid)
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise BadMessage(f"{name}: {_one_line(exc)}", rid) from None


def parse_wrench(frame: bytes, max_bytes: int) -> WrenchSample:
    obj = decode(frame, max_bytes)
    _check_version(obj, None)
    try:
        return WrenchSample.model_validate(obj)
    except ValidationError as exc:
        raise BadMessage(f"wrench sample: {_one_line(exc)}") from None


def check_wrench(
    force: list[float], torque: list[float], max_force: float, max_torque: float
) -> str | None:
    """The reason a wrench is above the limits, or None."""
    f, m = math.hypot(*force), math.hypot(*torque)
    if f > max_force:
        return f"|force| {f:.4g} N is above the limit of {max_force:g} N"
    if m > max_torque:
        return f"|torque| {m:.4g} N m is above the limit of {max_torque:g} N m"
    return None


def make_reply(
    request_id: int | str | None, cmd: str | None, error: str | None = None, **data: Any
) -> bytes:
    """``{version, id, cmd, ok, error?, ...data}`` as one msgpack frame."""
    out: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "id": request_id,
        "cmd": cmd,
        "ok": error is None,
    }
    if error is not None:
        out["error"] = error
    out.update(data)
    return encode(out)


# -- the state stream: "<topic> <msgpack map>" in one frame (CONFLATE needs single frames) -------
def state_frame(prefix: bytes, state: dict[str, Any]) -> bytes:
    """``prefix`` is the topic followed by one space."""
    return prefix + encode(state)


def parse_state(frame: bytes) -> dict[str, Any]:
    """A state frame -> its map. Raises :class:`BadMessage` on anything else."""
    cut = frame.find(b" ")
    if cut < 0:
        raise BadMessage("state frame without a topic")
    state = decode(frame[cut + 1 :], len(frame))
    if state.get("version") != SCHEMA_VERSION:
        raise BadMessage(f"state schema version {state.get('version')!r} is not {SCHEMA_VERSION}")
    return state
