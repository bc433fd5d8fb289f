"""Exceptions raised by the simulator package, each carrying the context a user needs."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SimError", "LinkNotFound", "NoDisplay", "UrdfNotFound", "RecordingError"]


class SimError(Exception):
    """Base class of every error raised by :mod:`sim`."""


class UrdfNotFound(SimError):
    def __init__(self, urdf: str, resolved: str) -> None:
        self.urdf, self.resolved = urdf, resolved
        super().__init__(f"URDF '{urdf}' not found (looked at {resolved})")


class LinkNotFound(SimError):
    def __init__(self, name: str, links: Sequence[str]) -> None:
        self.name, self.links = name, list(links)
        super().__init__(f"link '{name}' not in the URDF; links are: {', '.join(self.links)}")


class NoDisplay(SimError):
    def __init__(self) -> None:
        super().__init__(
            "--gui needs a display but DISPLAY is not set; run headless (drop --gui) "
            "or start one (e.g. Xvfb :1 & export DISPLAY=:1)"
        )


class RecordingError(SimError):
    """Recording could not be written (unknown format, missing optional encoder)."""
