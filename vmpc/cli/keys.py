"""``vmpc keys``: CURVE key pairs for the bridge."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, add_group

__all__ = ["add_keys_commands"]


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from mpc.bridge.keys import generate_keypair

    pub, sec = generate_keypair(args.dir, args.name)
    print(f"wrote {pub} (public: share it) and {sec} (secret, mode 0600: keep it)")
    print(
        f"  server: --set bridge.curve.server_secret_key={sec} "
        f"--set bridge.curve.clients_dir=DIR_OF_ALLOWED_CLIENT_KEYS"
    )
    print(
        f"  client: --client-key {sec} --server-key SERVER.key; a server admits this client "
        f"once {pub.name} is in its clients_dir"
    )
    return EXIT_OK


def add_keys_commands(sub: Any) -> None:
    _, ksub = add_group(sub, "keys", "CURVE key pairs for the bridge", "ACTION")
    g = ksub.add_parser(
        "generate",
        help="write NAME.key and NAME.key_secret",
        description="Make a CURVE key pair with zmq.auth. Never overwrites.",
    )
    g.add_argument("name", nargs="?", default="client", help="file name stem (default client)")
    g.add_argument("--dir", default="keys", help="folder (default keys/)")
    g.set_defaults(func=cmd_keys_generate)
