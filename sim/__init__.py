"""PyBullet side of value-mpc: the simulated arm, disturbances and recording.

This package knows PyBullet and nothing of Crocoddyl or the controller.
"""

from .bullet_arm import BulletArm, display_available
from .disturbances import Disturbances, Push, sample_random_pushes
from .errors import LinkNotFound, NoDisplay, RecordingError, SimError, UrdfNotFound
from .recording import Recorder
from .specs import (
    DisturbanceSpec,
    MismatchSpec,
    PushSpec,
    RandomPushSpec,
    RobotSpec,
    SimSpec,
    resolve_urdf,
)

__all__ = [
    "BulletArm",
    "Disturbances",
    "DisturbanceSpec",
    "LinkNotFound",
    "MismatchSpec",
    "NoDisplay",
    "Push",
    "PushSpec",
    "RandomPushSpec",
    "Recorder",
    "RecordingError",
    "RobotSpec",
    "SimError",
    "SimSpec",
    "UrdfNotFound",
    "display_available",
    "resolve_urdf",
    "sample_random_pushes",
]
