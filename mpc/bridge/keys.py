"""CURVE key pairs for the bridge: generation, and loading that fails closed.

Key files are ZeroMQ certificates as written by ``zmq.auth.create_certificates``: ``NAME.key``
holds the public key, ``NAME.key_secret`` the pair. The server needs its secret certificate and a
folder of allowed client public certificates; a client needs its secret certificate and the
server's public one. A missing, empty or unreadable file or folder is an error, never a
silently open door: CURVE without a ZAP allow-list accepts any client key.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import VmpcError

__all__ = [
    "KeyFileError",
    "ClientKeys",
    "ServerKeys",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "load_allowed_clients",
    "start_authenticator",
]

log = logging.getLogger("vmpc.bridge")

_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyFileError(VmpcError):
    """A key file or folder is missing, unreadable or malformed; the message names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def _read(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(path, "no such key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(path, f"not a ZeroMQ certificate ({type(exc).__name__})") from None
    if not _Z85_KEY.match(public):
        raise KeyFileError(path, "public-key is not a 40-character Z85 key")
    if secret is not None and not _Z85_KEY.match(secret):
        raise KeyFileError(path, "secret-key is not a 40-character Z85 key")
    return public, secret


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    return _read(Path(path))[0]


def load_secret_key(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) of a ``*.key_secret`` certificate."""
    public, secret = _read(Path(path))
    if secret is None:
        raise KeyFileError(path, "has no secret-key (pass the *.key_secret file)")
    return public, secret


def load_allowed_clients(folder: str | os.PathLike[str]) -> frozenset[bytes]:
    """Public keys of every ``*.key`` in ``folder``; refuses an empty folder or a bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KeyFileError(folder, "no such folder of client keys")
    files = sorted(folder.glob("*.key"))
    if not files:
        raise KeyFileError(folder, "holds no client public keys (*.key): nobody could connect")
    return frozenset(load_public_key(f) for f in files)


def generate_keypair(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``folder/name.key`` and ``folder/name.key_secret`` (mode 0600); never overwrites."""
    if not _NAME.match(name):
        raise KeyFileError(name, "a key name is 1-64 letters, digits, '_', '.' or '-'")
    folder = Path(folder)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists():
            raise KeyFileError(p, "exists already; remove it or choose another name")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        pub, sec = zmq.auth.create_certificates(folder, name)
        os.chmod(sec, 0o600)
    except OSError as exc:
        raise KeyFileError(folder, f"cannot write keys ({exc.strerror})") from None
    return Path(pub), Path(sec)


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs: its own pair and the server's public key (Z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(
        cls, client_secret: str | os.PathLike[str], server_public: str | os.PathLike[str]
    ) -> ClientKeys:
        public, secret = load_secret_key(client_secret)
        return cls(public, secret, load_public_key(server_public))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


class _AllowList:
    """ZAP credentials provider: a fixed set of client keys, and a count of refusals."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys
        self.denied = 0
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        with self._lock:
            self.denied += 1
        log.warning("bridge: refused a client with an unknown CURVE key")
        return False


def start_authenticator(
    ctx: zmq.Context, server_secret: str | os.PathLike[str], clients_dir: str | os.PathLike[str]
) -> tuple[ServerKeys, ThreadAuthenticator, _AllowList]:
    """Check every key file first (fail closed), then run a ZAP handler that admits exactly the
    keys found. Start it before binding: a CURVE socket with no ZAP handler admits anyone."""
    public, secret = load_secret_key(server_secret)
    allow = _AllowList(load_allowed_clients(clients_dir))
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("vmpc.bridge.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    return ServerKeys(public, secret), auth, allow
