"""Import PyBullet without its C-level 'pybullet build time: ...' banner, which would otherwise
precede every one-line error message and every client command's output."""

from __future__ import annotations

import os
import sys


def import_pybullet():
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            import pybullet
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
    return pybullet
