"""Config sections of the systems DVP learns values for (``system:`` in a DVP config)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sim.specs import Strict

__all__ = [
    "SYSTEM_KINDS",
    "ArmSpec",
    "CartpoleSpec",
    "DoublePendulumSpec",
    "PendulumSpec",
    "SystemSpec",
    "UnicycleSpec",
]


class PendulumSpec(Strict):
    kind: Literal["pendulum"] = "pendulum"
    mass: float = Field(default=1.0, gt=0, description="[kg] point mass")
    length: float = Field(default=1.0, gt=0, description="[m]")
    torque_limit: float = Field(default=3.0, gt=0, description="[N m]")
    dt: float = Field(default=0.05, gt=0, description="[s]")
    w_x: tuple[float, float] = (1.0, 0.1)  # angle, velocity
    w_u: float = 0.001
    box: tuple[tuple[float, float], tuple[float, float]] = ((-3.1, 3.1), (-2.0, 2.0))


class DoublePendulumSpec(Strict):
    kind: Literal["double_pendulum"] = "double_pendulum"
    mass: float = Field(default=1.0, gt=0, description="[kg] point mass at each link's end")
    length: float = Field(default=0.5, gt=0, description="[m] each link")
    torque_limit: float = Field(default=5.0, gt=0, description="[N m] on each joint")
    dt: float = Field(default=0.05, gt=0, description="[s]")
    # q1, q2, v1, v2
    w_x: tuple[float, float, float, float] = (1.0, 1.0, 0.1, 0.1)
    w_u: float = 0.001
    box: tuple[tuple[float, float], ...] = ((-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5))


class CartpoleSpec(Strict):
    kind: Literal["cartpole"] = "cartpole"
    cart_mass: float = Field(default=1.0, gt=0)
    pole_mass: float = Field(default=0.1, gt=0)
    pole_length: float = Field(default=0.5, gt=0, description="[m] pivot to pole mass")
    force_limit: float = Field(default=20.0, gt=0, description="[N]")
    dt: float = Field(default=0.02, gt=0)
    w_x: tuple[float, float, float, float] = (1.0, 1.0, 0.1, 0.1)  # x, theta, xdot, thetadot
    w_u: float = 0.01
    box: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (-0.4, 0.4), (-0.5, 0.5), (-0.5, 0.5))


class UnicycleSpec(Strict):
    kind: Literal["unicycle"] = "unicycle"
    w_x: float = Field(default=10.0, gt=0, description="Crocoddyl's costWeights[0]")
    w_u: float = Field(default=1.0, gt=0, description="Crocoddyl's costWeights[1]")
    box: tuple[tuple[float, float], ...] = ((-1.5, 1.5), (-1.5, 1.5), (-1.5, 1.5))


class ArmSpec(Strict):
    kind: Literal["arm"] = "arm"
    config: str = Field(description="the MPC config whose robot and running cost are learned")
    set: list[str] = Field(default_factory=list, description="overrides of that config")
    conditioned: bool = Field(default=False, description="input [x, target]: any target")
    q_spread: float = Field(default=0.5, gt=0, description="[rad] start box around q0")
    v_spread: float = Field(default=0.5, ge=0, description="[rad/s] start velocities")
    min_target_distance: float = Field(default=0.1, ge=0, description="[m] start EE to target")
    target_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = Field(
        default=None,
        description="[m] (min, max) of the targets a conditioned value is trained "
        "for (default: the config's task.workspace)",
    )


SystemSpec = Annotated[
    PendulumSpec | DoublePendulumSpec | CartpoleSpec | UnicycleSpec | ArmSpec,
    Field(discriminator="kind"),
]

SYSTEM_KINDS = ("pendulum", "double_pendulum", "cartpole", "unicycle", "arm")
