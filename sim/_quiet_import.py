"""Import PyBullet without its C-level 'pybullet build time: ...' banner on stderr, which would
otherwise precede every one-line error message of the CLI."""

from __future__ import annotations

import os
import sys


def import_pybullet():
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import pybullet
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return pybullet
