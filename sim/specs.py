"""Typed descriptions of a robot, the simulator, disturbances and model mismatch.

These are the pydantic schemas of the config sections that the simulator consumes; mpc's config
composes them. Everything is validated with ``extra="forbid"`` so a typo is an error, not a no-op.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import UrdfNotFound

__all__ = [
    "CameraSpec",
    "Vec3",
    "Strict",
    "RobotSpec",
    "SimSpec",
    "PushSpec",
    "RandomPushSpec",
    "DisturbanceSpec",
    "MismatchSpec",
    "resolve_urdf",
]

Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]


class Strict(BaseModel):
    """Base of every config section: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RobotSpec(Strict):
    """A robot is a config entry: the same URDF feeds PyBullet and Pinocchio."""

    name: str = Field(description="short name, stored in logs and value-model metadata")
    urdf: str = Field(
        description="'pybullet_data:<relative path>' for a file shipped by pybullet_data, "
        "otherwise a path (relative paths are relative to the config file)"
    )
    ee_frame: str = Field(description="link whose frame carries the end effector")
    ee_offset: Vec3 = Field(default=[0.0, 0.0, 0.0], description="EE point in ee_frame [m]")
    locked_joints: dict[str, float] = Field(
        default_factory=dict, description="joint name -> fixed position [rad or m]"
    )
    torque_limits: list[Annotated[float, Field(gt=0)]] = Field(
        description="per actuated joint, in URDF order [N m]"
    )
    q0: list[float] = Field(description="initial configuration of the actuated joints [rad]")
    q_posture: list[float] | None = Field(
        default=None, description="posture for state regularisation; defaults to q0 [rad]"
    )

    @model_validator(mode="after")
    def _same_lengths(self) -> RobotSpec:
        n = len(self.torque_limits)
        if len(self.q0) != n:
            raise ValueError(f"q0 has {len(self.q0)} entries but torque_limits has {n}")
        if self.q_posture is not None and len(self.q_posture) != n:
            raise ValueError(
                f"q_posture has {len(self.q_posture)} entries but torque_limits has {n}"
            )
        return self

    @property
    def posture(self) -> list[float]:
        return self.q_posture if self.q_posture is not None else self.q0


class CameraSpec(Strict):
    """The PyBullet debug camera (GUI and recordings); its target is the robot's base."""

    distance: float = Field(default=1.5, gt=0, description="[m] from the target")
    yaw: float = Field(default=60.0, description="[deg]")
    pitch: float = Field(default=-25.0, ge=-90, le=90, description="[deg]")


class SimSpec(Strict):
    timestep: float = Field(default=0.001, gt=0, le=0.01, description="physics step [s]")
    gravity: Vec3 = Field(default=[0.0, 0.0, -9.81], description="[m/s^2], world frame")
    record_fps: float = Field(default=25.0, gt=0, le=120, description="frames per sim second")
    record_size: tuple[int, int] = Field(default=(480, 360), description="width, height [px]")
    camera: CameraSpec = Field(
        default_factory=CameraSpec,
        description="debug camera of the GUI and of recordings; it looks at the robot's base",
    )


class PushSpec(Strict):
    """One scheduled external wrench, constant over [start, start + duration)."""

    start: float = Field(ge=0, description="[s] of sim time")
    duration: float = Field(gt=0, description="[s]")
    force: Vec3 = Field(default=[0.0, 0.0, 0.0], description="world frame [N]")
    torque: Vec3 = Field(default=[0.0, 0.0, 0.0], description="world frame [N m]")
    link: str | None = Field(default=None, description="link name; default the EE link")


class RandomPushSpec(Strict):
    """Seeded random pushes: Poisson arrivals, random direction, uniform magnitude."""

    enabled: bool = False
    seed: int = Field(default=0, ge=0)
    rate_hz: float = Field(default=0.5, gt=0, description="mean pushes per second")
    force_range: tuple[float, float] = Field(default=(20.0, 60.0), description="[N]")
    duration: float = Field(default=0.1, gt=0, description="[s]")
    start_after: float = Field(default=1.0, ge=0, description="no push before this time [s]")
    link: str | None = None

    @field_validator("force_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError("must be [min, max] with 0 <= min <= max")
        return v


class DisturbanceSpec(Strict):
    schedule: list[PushSpec] = Field(default_factory=list)
    random: RandomPushSpec = Field(default_factory=RandomPushSpec)


class MismatchSpec(Strict):
    """Knobs that make the simulated plant differ from the controller's model."""

    payload_kg: float = Field(default=0.0, ge=0, description="extra mass on the EE link [kg]")
    joint_damping: float | None = Field(
        default=None, ge=0, description="viscous damping [N m s/rad]; null zeroes the URDF's"
    )
    joint_friction: float = Field(default=0.0, ge=0, description="Coulomb friction [N m]")
    torque_noise_std: float = Field(default=0.0, ge=0, description="[N m], added to commands")
    q_noise_std: float = Field(default=0.0, ge=0, description="measurement noise [rad]")
    v_noise_std: float = Field(default=0.0, ge=0, description="measurement noise [rad/s]")
    seed: int = Field(default=0, ge=0)

    @property
    def any(self) -> bool:
        return bool(
            self.payload_kg
            or self.joint_damping
            or self.joint_friction
            or self.torque_noise_std
            or self.q_noise_std
            or self.v_noise_std
        )


def resolve_urdf(urdf: str, base_dir: Path | None = None) -> Path:
    """Turn a config's ``urdf`` entry into an existing path, or raise :class:`UrdfNotFound`."""
    if urdf.startswith("pybullet_data:"):
        import pybullet_data

        path = Path(pybullet_data.getDataPath()) / urdf.split(":", 1)[1]
    else:
        path = Path(os.path.expanduser(urdf))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    if not path.is_file():
        raise UrdfNotFound(urdf, str(path))
    return path.resolve()
