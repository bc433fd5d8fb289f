"""Exceptions of the controller side. Each carries the context that names the culprit."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "FrameNotFound",
    "JointNotFound",
    "ModelError",
    "SwapRefused",
    "VmpcError",
]


class VmpcError(Exception):
    """Base class of every error that the CLI reports as one line with exit code 2."""


class ConfigError(VmpcError):
    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class ModelError(VmpcError):
    """The robot model cannot be built as configured."""


class FrameNotFound(ModelError):
    def __init__(self, name: str, frames: Sequence[str]) -> None:
        self.name, self.frames = name, list(frames)
        super().__init__(
            f"frame '{name}' not in the robot model; frames are: {', '.join(self.frames)}"
        )


class JointNotFound(ModelError):
    def __init__(self, name: str, joints: Sequence[str]) -> None:
        self.name, self.joints = name, list(joints)
        super().__init__(
            f"joint '{name}' not in the robot model; joints are: {', '.join(self.joints)}"
        )


class SwapRefused(VmpcError):
    """A terminal could not be installed; the message is one line saying why."""
