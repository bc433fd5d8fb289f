"""PyBullet side of value-mpc: the simulated arm, disturbances and recording.

This package knows PyBullet and nothing of Crocoddyl or the controller. The arm itself is in
:mod:`sim.bullet_arm` (``from sim.bullet_arm import BulletArm``), the only module that imports
PyBullet; this top level holds the config schemas, disturbances, recording and errors, so that
reading a config (or a bridge client) does not load the physics engine.
"""

from .disturbances import Disturbances, Push, sample_random_pushes
from .errors import LinkNotFound, NoDisplay, RecordingError, SimError, UrdfNotFound
from .recording import Recorder
from .specs import (
    CameraSpec,
    DisturbanceSpec,
    MismatchSpec,
    PushSpec,
    RandomPushSpec,
    RobotSpec,
    SimSpec,
    resolve_urdf,
)

__all__ = [
    "CameraSpec",
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
    "resolve_urdf",
    "sample_random_pushes",
]
