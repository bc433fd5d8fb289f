"""The bridge's wire format: every command and sample parses, and every kind of malformed frame
is refused with a one-line BadMessage (never another exception)."""

import math

import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from mpc.bridge.messages import (
    COMMANDS,
    SCHEMA_VERSION,
    BadMessage,
    PushCommand,
    check_wrench,
    decode,
    encode,
    make_reply,
    parse_command,
    parse_state,
    parse_wrench,
    state_frame,
)
from mpc.bridge.spec import BridgeSpec
from mpc.config import load_config
from mpc.errors import ConfigError

from .conftest import IIWA

MAX = 4096

VALID = [
    {"cmd": "push", "force": [10.0, 0, -5], "duration": 0.1},
    {"cmd": "push", "force": [1, 2, 3], "torque": [0.1, 0, 0], "duration": 1, "link": "l7"},
    {"cmd": "set_target", "target": [0.4, 0.3, 0.5]},
    {"cmd": "swap_value", "path": "models/v.pt"},
    {"cmd": "swap_value", "path": "none", "force": True},
    {"cmd": "clear_value"},
    {"cmd": "status"},
    {"cmd": "pause"},
    {"cmd": "resume"},
]


def frame(**fields):
    return encode({"version": SCHEMA_VERSION, **fields})


@pytest.mark.parametrize("fields", VALID, ids=lambda f: f["cmd"])
def test_every_command_parses(fields):
    cmd = parse_command(frame(id=7, **fields), MAX)
    assert cmd.cmd == fields["cmd"] and cmd.id == 7
    assert set(COMMANDS) == {
        "push",
        "set_target",
        "swap_value",
        "clear_value",
        "status",
        "pause",
        "resume",
    }


BAD = {
    "unknown field": ({"cmd": "status", "colour": "red"}, "unknown field"),
    "unknown command": ({"cmd": "explode"}, "unknown command"),
    "missing command": ({}, "unknown command"),
    "command not a string": ({"cmd": 3}, "unknown command"),
    "string for a number": ({"cmd": "push", "force": ["1", 0, 0], "duration": 0.1}, "force.0"),
    "bool for a number": ({"cmd": "push", "force": [True, 0, 0], "duration": 0.1}, "force.0"),
    "short vector": ({"cmd": "set_target", "target": [0.1, 0.2]}, "target"),
    "huge vector": ({"cmd": "set_target", "target": [0.1] * 300}, "target"),
    "NaN": ({"cmd": "set_target", "target": [math.nan, 0, 0.5]}, "finite"),
    "inf": ({"cmd": "push", "force": [math.inf, 0, 0], "duration": 0.1}, "finite"),
    "zero duration": ({"cmd": "push", "force": [1, 0, 0], "duration": 0}, "duration"),
    "missing field": ({"cmd": "push", "duration": 0.1}, "force"),
    "bytes for a path": ({"cmd": "swap_value", "path": b"models/x.pt"}, "path"),
    "int for a bool": ({"cmd": "swap_value", "path": "none", "force": 1}, "force"),
    "map for a link": ({"cmd": "push", "force": [1, 0, 0], "duration": 0.1, "link": {}}, "link"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_schema_violations_are_one_line_errors(name):
    fields, words = BAD[name]
    with pytest.raises(BadMessage) as exc:
        parse_command(frame(id=3, **fields), MAX)
    assert words in exc.value.reason and "\n" not in exc.value.reason
    assert exc.value.request_id == 3  # echoed so the client can match the error


@pytest.mark.parametrize("version", [None, 2, 0, True, 1.0, "1"])
def test_other_schema_versions_are_refused(version):
    obj = {"cmd": "status"} if version is None else {"version": version, "cmd": "status"}
    with pytest.raises(BadMessage, match="version"):
        parse_command(encode(obj), MAX)


@pytest.mark.parametrize(
    "blob, words",
    [
        (b"", "not a msgpack"),
        (b"\xc1", "not a msgpack"),  # never used by msgpack
        (encode({"version": 1, "cmd": "status"})[:-3], "not a msgpack"),  # truncated
        (encode([1, 2, 3]), "must be a msgpack map"),
        (encode(42), "must be a msgpack map"),
        (msgpack.packb({1: 2}), "not a msgpack"),  # non-string keys (strict_map_key)
        (encode({"version": 1, "cmd": "status"}) + b"\x00", "not a msgpack"),  # trailing bytes
        (b"\x91" * 3000, "not a msgpack"),  # nested arrays deeper than the unpacker's stack
        (b"\xdd\xff\xff\xff\xff", "not a msgpack"),  # an array header claiming 4 G elements
        (b"\xc7\x01\x05x", "must be a msgpack map"),  # an ext type
        (b"\x00" * (MAX + 1), "larger than the limit"),
    ],
)
def test_undecodable_frames_are_refused(blob, words):
    with pytest.raises(BadMessage, match=words):
        parse_command(blob, MAX)


def test_thousands_of_random_and_mutated_frames_only_ever_raise_bad_message(rng):
    valid = [frame(id=i, **f) for i, f in enumerate(VALID)]
    n_ok = 0
    for i in range(4000):
        kind = i % 4
        if kind == 0:
            blob = rng.bytes(int(rng.integers(0, 300)))
        elif kind == 1:
            v = valid[i % len(valid)]
            blob = v[: int(rng.integers(0, len(v)))]
        elif kind == 2:
            b = bytearray(valid[i % len(valid)])
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            blob = bytes(b)
        else:
            blob = encode(
                {
                    "version": 1,
                    "cmd": str(rng.choice(list(COMMANDS))),
                    "force": rng.normal(size=int(rng.integers(0, 5))).tolist(),
                    "duration": float(rng.choice([0.1, -1.0, math.nan, 1e308])),
                    "target": [float(x) for x in rng.normal(size=3)],
                }
            )
        try:
            cmd = parse_command(blob, MAX)
        except BadMessage as exc:
            assert exc.reason and "\n" not in exc.reason
            continue
        n_ok += 1
        for value in cmd.model_dump().values():  # what does parse is well-formed and finite
            if isinstance(value, float):
                assert math.isfinite(value)
            if isinstance(value, list):
                assert len(value) == 3 and all(math.isfinite(x) for x in value)
    assert n_ok < 4000


def test_wrench_samples():
    s = parse_wrench(encode({"version": 1, "t": 12.5, "force": [1, 2, 3]}), MAX)
    assert s.force == [1.0, 2.0, 3.0] and s.torque == [0.0, 0.0, 0.0] and s.link is None
    for bad in (
        {"version": 1, "force": [1, 2, 3]},  # no timestamp
        {"version": 1, "t": 0.0, "force": [1, 2, math.nan]},
        {"version": 1, "t": 0.0, "force": [1, 2, 3], "cmd": "push"},
        {"version": 2, "t": 0.0, "force": [1, 2, 3]},
    ):
        with pytest.raises(BadMessage):
            parse_wrench(encode(bad), MAX)
    assert check_wrench([3, 4, 0], [0, 0, 0], 5.0, 1.0) is None
    assert "force" in check_wrench([3, 4, 0.1], [0, 0, 0], 5.0, 1.0)
    assert "torque" in check_wrench([0, 0, 0], [0, 2, 0], 5.0, 1.0)


def test_replies_and_state_frames_round_trip():
    r = decode(make_reply(5, "push", None, tick=3, t=0.003), MAX)
    assert r == {"version": 1, "id": 5, "cmd": "push", "ok": True, "tick": 3, "t": 0.003}
    r = decode(make_reply(None, None, "bad"), MAX)
    assert r["ok"] is False and r["error"] == "bad"
    state = {"version": 1, "seq": 1, "q": np.arange(7.0).tolist()}
    f = state_frame(b"vmpc.state ", state)
    assert f.startswith(b"vmpc.state ") and parse_state(f) == state
    with pytest.raises(BadMessage):
        parse_state(b"nospace")
    with pytest.raises(BadMessage):
        parse_state(b"vmpc.state " + encode({"version": 9}))


def test_push_model_is_frozen_and_strict():
    cmd = PushCommand(version=1, cmd="push", force=[1, 0, 0], duration=0.1)
    with pytest.raises(ValidationError, match="frozen"):
        cmd.duration = 5.0
    assert cmd.duration == 0.1
    with pytest.raises(ValidationError, match="force.0"):  # strict: no "1" -> 1.0 coercion
        PushCommand(version=1, cmd="push", force=["1", 0, 0], duration=0.1)


def test_bridge_config_section():
    cfg = load_config(IIWA)
    assert cfg.bridge == BridgeSpec() and cfg.bridge.bind == "127.0.0.1"
    assert cfg.bridge.publish_every == 2 and cfg.bridge.curve is None
    for key, value, words in [
        ("bridge.colour", "red", "unknown key"),
        ("bridge.topic", "'has space'", "printable"),
        ("bridge.bind", "tcp://0.0.0.0:5", "no scheme"),
        ("bridge.command_port", "5555", "must differ"),
        ("bridge.publish_every", "0", "greater than or equal to 1"),
        ("bridge.limits.max_force_n", ".nan", "finite"),
        ("bridge.curve", "{server_secret_key: a}", "clients_dir"),
    ]:
        with pytest.raises(ConfigError, match=words):
            load_config(IIWA, [f"{key}={value}"])
