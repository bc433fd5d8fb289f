"""Configuration of a critic run (``vmpc train critic --config configs/critic_<task>.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from mpc.config import load_yaml_model
from sim.specs import Strict

from ..configs import resolve_arm_config
from ..envs.arm import ARM_JACOBIAN_SOURCES, ArmReachSpec
from ..envs.swingup import JACOBIAN_SOURCES, SwingUpSpec
from .networks import ACTIVATIONS

__all__ = [
    "RESUME_MAY_DIFFER",
    "CriticConfig",
    "SobolevSpec",
    "Toy1DSpec",
    "load_critic_config",
]

Activation = Literal["relu", "tanh", "leaky_relu", "elu"]
assert set(ACTIVATIONS) == set(Activation.__args__)  # type: ignore[attr-defined]


class Toy1DSpec(Strict):
    kind: Literal["toy1d"] = "toy1d"
    horizon: int = Field(default=20, ge=1, description="steps per episode (SAC only)")


class SwingUpEnvSpec(SwingUpSpec):
    kind: Literal["swingup"] = "swingup"


class SobolevSpec(Strict):
    enabled: bool = Field(
        default=True, description="the gradient terms; false is the value-only baseline"
    )
    zeta_s: float = Field(default=1.0, ge=0, description="state-gradient weight (lambda_s)")
    zeta_a: float = Field(default=1.0, ge=0, description="action-gradient weight (lambda_a)")
    balance: Literal["fixed", "gradient_ratio"] = Field(
        default="fixed",
        description="fixed: beta = zeta; gradient_ratio: beta = zeta ||dL_q|| / ||dL_s,a|| "
        "recomputed every `every` updates (Gurumurthy eq. 18)",
    )
    every: int = Field(default=20, ge=1)
    loss: Literal["squared", "huber"] = "squared"
    huber_delta: float = Field(default=1.0, gt=0)
    through_policy: bool = Field(
        default=True,
        description="SAC: grad_s' of the bootstrap goes through a' = pi(s') (Schramm's "
        "actor-critic target); false treats a' as a constant",
    )
    jacobians: Literal["nominal", "exact", "finite_difference"] = Field(
        default="nominal",
        description="where ds'/d(s, a) and grad r come from: the nominal model (VG-SAC), the "
        "real one (Schramm), or finite differences of the nominal one (VG-SAC-FD)",
    )


class CriticSpec(Strict):
    kind: Literal["mlp", "quadratic"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: Activation = "relu"


class ActorSpec(Strict):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)


class TrainSpec(Strict):
    steps: int = Field(default=20_000, ge=1, description="environment steps (Q-learning: updates)")
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-4, gt=0, description="critic (and actor) learning rate")
    gamma: float = Field(default=0.99, gt=0, lt=1)
    tau: float = Field(default=0.005, gt=0, le=1, description="Polyak rate of the targets")
    alpha: float | Literal["auto"] = Field(
        default="auto", description="SAC entropy weight, or auto (target entropy -dim(a))"
    )
    alpha_init: float = Field(
        default=1.0,
        gt=0,
        description="auto: the starting entropy weight (small where rewards are small: the "
        "arm's cost is ~0.05 per knot, the entropy of 7 actions is ~7)",
    )
    learning_starts: int = Field(default=1000, ge=0, description="uniform random actions first")
    grid: int = Field(default=100, ge=2, description="Q-learning: actions of the max")


class EvalSpec(Strict):
    every: int = Field(default=1000, ge=1, description="environment steps between evaluations")
    episodes: int = Field(default=10, ge=1, description="held-out start states")
    seed: int = Field(default=424242, ge=0)


class CriticConfig(Strict):
    env: Annotated[Toy1DSpec | SwingUpEnvSpec | ArmReachSpec, Field(discriminator="kind")]
    algorithm: Literal["qlearning", "sac"] = "sac"
    sobolev: SobolevSpec = Field(default_factory=SobolevSpec)
    critic: CriticSpec = Field(default_factory=CriticSpec)
    actor: ActorSpec = Field(default_factory=ActorSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: int = Field(default=0, ge=0)
    torch_threads: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CriticConfig:
        if self.algorithm == "qlearning" and self.env.kind != "toy1d":
            raise ValueError("algorithm: qlearning (grid max) needs env.kind: toy1d")
        if self.critic.kind == "quadratic" and self.env.kind != "toy1d":
            raise ValueError("critic.kind: quadratic is the 1D toy's six-parameter critic")
        if self.env.kind == "swingup" and self.sobolev.jacobians not in JACOBIAN_SOURCES:
            raise ValueError(f"sobolev.jacobians must be one of {JACOBIAN_SOURCES}")
        if self.env.kind == "arm" and self.sobolev.jacobians not in ARM_JACOBIAN_SOURCES:
            raise ValueError(
                f"sobolev.jacobians: {self.sobolev.jacobians} is not available on the arm "
                f"(PyBullet gives no derivatives); use {' or '.join(ARM_JACOBIAN_SOURCES)}"
            )
        if self.algorithm == "sac" and self.eval.every % self.horizon:
            raise ValueError(
                f"eval.every ({self.eval.every}) must be a multiple of the episode length "
                f"({self.horizon}): checkpoints fall between episodes"
            )
        return self

    @property
    def horizon(self) -> int:
        return self.env.horizon

    @property
    def task_name(self) -> str:
        """toy1d, swingup-pendulum, swingup-cartpole or arm-<robot> (summaries, studies, run
        folders)."""
        if self.env.kind == "toy1d":
            return "toy1d"
        if self.env.kind == "arm":
            return "arm-reach"
        return f"swingup-{self.env.system.kind}"


# Only these may change when a run resumes: they do not change what was computed so far.
RESUME_MAY_DIFFER = ("train.steps", "torch_threads")


def load_critic_config(path: str | Path, overrides: list[str] | None = None) -> CriticConfig:
    def prepare(raw: dict, file: Path) -> None:
        if isinstance(raw.get("env"), dict):
            resolve_arm_config(raw["env"], file)

    return load_yaml_model(
        Path(path),
        CriticConfig,
        overrides or [],
        prepare=prepare,
        drop=("toy1d", "swingup", "pendulum", "cartpole", "arm"),
    )
