"""CURVE keys: generation, fail-closed loading, and a ZAP allow-list that admits exactly the
listed clients (unknown keys and plaintext clients get no answer)."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from mpc.bridge.client import BridgeClient, BridgeTimeout
from mpc.bridge.keys import (
    ClientKeys,
    KeyFileError,
    generate_keypair,
    load_allowed_clients,
    load_secret_key,
)
from mpc.bridge.server import BridgeServer
from mpc.config import load_config
from mpc.loop import ClosedLoop

from .conftest import IIWA, PORTS, run_bridge, vmpc_subprocess


@pytest.fixture
def keyring(tmp_path):
    """A server pair, an allowed client and a stranger; clients/ holds the allowed public key."""
    keys = tmp_path / "keys"
    generate_keypair(keys, "server")
    generate_keypair(keys, "client")
    generate_keypair(tmp_path / "other", "stranger")
    (keys / "clients").mkdir()
    (keys / "clients" / "client.key").write_bytes((keys / "client.key").read_bytes())
    return tmp_path


def test_generated_pairs_load_and_are_never_overwritten(tmp_path):
    pub, sec = generate_keypair(tmp_path / "k", "alice")
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    public, secret = load_secret_key(sec)
    assert len(public) == 40 and len(secret) == 40
    assert load_allowed_clients(tmp_path / "k") == {public}
    with pytest.raises(KeyFileError, match="exists already"):
        generate_keypair(tmp_path / "k", "alice")
    with pytest.raises(KeyFileError, match="key name"):
        generate_keypair(tmp_path / "k", "../evil")


def test_bad_key_files_and_folders_fail_closed(keyring):
    k = keyring / "keys"
    (keyring / "empty").mkdir()
    (keyring / "junk").mkdir()
    (keyring / "junk" / "x.key").write_text("not a certificate\n")
    (keyring / "short").mkdir()
    (keyring / "short" / "y.key").write_text('metadata\ncurve\n    public-key = "abc"\n')
    cases = [
        (lambda: load_secret_key(k / "server.key"), "no secret-key"),
        (lambda: load_secret_key(k / "missing.key_secret"), "no such key file"),
        (lambda: load_allowed_clients(keyring / "nowhere"), "no such folder"),
        (lambda: load_allowed_clients(keyring / "empty"), "holds no client public keys"),
        (lambda: load_allowed_clients(keyring / "junk"), "not a ZeroMQ certificate"),
        (lambda: load_allowed_clients(keyring / "short"), "40-character Z85"),
    ]
    for call, words in cases:
        with pytest.raises(KeyFileError, match=words):
            call()
    # A server whose key folder is bad refuses to start and leaves no socket bound.
    for secret, clients in [
        (k / "server.key_secret", keyring / "empty"),
        (k / "server.key", k / "clients"),
    ]:
        cfg = load_config(
            IIWA,
            [
                "run.duration=0.1",
                *PORTS,
                f"bridge.curve={{server_secret_key: '{secret}', clients_dir: '{clients}'}}",
            ],
        )
        with ClosedLoop(cfg) as loop, pytest.raises(KeyFileError):
            BridgeServer(loop)


def test_only_allowed_clients_get_answers(keyring):
    k = keyring / "keys"
    curve = (
        f"bridge.curve={{server_secret_key: '{k / 'server.key_secret'}', "
        f"clients_dir: '{k / 'clients'}'}}"
    )
    with run_bridge([curve], timeout_s=0.5) as rb:
        address = rb.server.endpoints["commands"]
        good = ClientKeys.load(k / "client.key_secret", k / "server.key")
        with BridgeClient(address, good, timeout_s=5) as c:
            assert c.status()["curve"] is True
            state = next(c.states(timeout_s=5))  # the state stream is encrypted too
            assert state["version"] == 1
            c.send_wrench([1.0, 0, 0])
        stranger = ClientKeys.load(keyring / "other" / "stranger.key_secret", k / "server.key")
        # Right key pair, wrong idea of the server's key: the handshake fails too.
        wrong_server = ClientKeys.load(k / "client.key_secret", k / "client.key")

        def unanswered(keys):
            with BridgeClient(address, keys, timeout_s=0.5) as c, pytest.raises(BridgeTimeout):
                c.status()

        # An unknown key, plaintext, and the wrong server key, each waiting out its timeout
        # (concurrently, so the three quiet windows overlap).
        with ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(unanswered, keys) for keys in (stranger, None, wrong_server)]:
                f.result()
        assert rb.server.summary()["auth_denied"] >= 1
        # Only the allowed client's commands got in: its status, and the status calls with
        # which states() and send_wrench() discover their endpoints.
        assert rb.server.counters.received == 3


def test_keys_generate_cli(tmp_path, vmpc_main):
    # The real entry point once (a smoke test of `vmpc keys generate`), then in-process.
    proc = vmpc_subprocess("keys", "generate", "bob", "--dir", str(tmp_path / "k"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k" / "bob.key").is_file() and (tmp_path / "k" / "bob.key_secret").is_file()
    pub, sec = load_secret_key(tmp_path / "k" / "bob.key_secret")
    assert load_allowed_clients(tmp_path / "k") == {pub}
    again = vmpc_main("keys", "generate", "bob", "--dir", str(tmp_path / "k"))
    assert again.returncode == 2 and "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    assert load_secret_key(tmp_path / "k" / "bob.key_secret") == (pub, sec)  # not overwritten
