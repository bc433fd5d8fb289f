"""Configuration of a DVP training run (one YAML file, validated like the MPC's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from mpc.config import load_yaml_model
from sim.specs import Strict

from ..configs import config_differences, prepare_system
from ..executors import ExecutorSpec
from .systems import SYSTEM_KINDS, SystemSpec

__all__ = [
    "RESUME_MAY_DIFFER",
    "DVPConfig",
    "DVPSpec",
    "FitSpec",
    "NetworkSpec",
    "ValidationSpec",
    "load_dvp_config",
    "resume_differences",
]


class NetworkSpec(Strict):
    kind: str = Field(default="residual", pattern="^(residual|feedforward)$")
    hidden: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=1)
    residual_dim: int = Field(default=16, ge=1)
    features: list[str] = Field(
        default_factory=list,
        description="task-space inputs after [x, theta] (arm only): ee_position_error, "
        "ee_velocity (mpc/value/features.py)",
    )
    goal_zero: bool = Field(
        default=False,
        description="residual r(z) - r(z * goal_mask): V = 0 and dV/dx = 0 exactly at rest with "
        "the EE on the target (residual kind, [q, v] state layout)",
    )

    @field_validator("features")
    @classmethod
    def _known_features(cls, names: list[str]) -> list[str]:
        from mpc.value.features import feature_dim

        feature_dim(names)  # UnknownFeature names the culprit and the known ones
        if len(set(names)) != len(names):
            raise ValueError(f"features listed twice: {names}")
        return names

    @model_validator(mode="after")
    def _goal_zero_needs_the_position_error(self) -> NetworkSpec:
        # Without it z * goal_mask = z at every state at rest, not only at the goal.
        if self.goal_zero and "ee_position_error" not in self.features:
            raise ValueError("goal_zero needs the ee_position_error feature in network.features")
        if self.goal_zero and self.kind != "residual":
            raise ValueError("goal_zero needs kind: residual")
        return self


class FitSpec(Strict):
    epochs: int = Field(default=60, ge=1, description="per DVP iteration")
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    val_fraction: float = Field(default=0.05, ge=0, lt=1)


class DVPSpec(Strict):
    iterations: int = Field(default=10, ge=1)
    samples: int = Field(default=400, ge=1, description="OCPs solved per iteration")
    horizon: int = Field(default=20, ge=1, description="knots of each OCP")
    record_nodes: int | None = Field(
        default=None,
        ge=1,
        description="record value samples at nodes 0..k-1 of each solution (None: all T)",
    )
    maxiter: int = Field(default=200, ge=1, description="FDDP iterations per solve")
    sobolev_lambda: float = Field(default=1.0, ge=0, description="0 = plain regression")


class ValidationSpec(Strict):
    samples: int = Field(default=100, ge=1)
    horizon_factor: int = Field(default=10, ge=2, description="ground truth horizon = this x T")
    maxiter: int = Field(default=500, ge=1)
    seed: int = Field(default=987654, ge=0, description="held out: never a training seed")


class DVPConfig(Strict):
    system: SystemSpec
    dvp: DVPSpec = Field(default_factory=DVPSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    fit: FitSpec = Field(default_factory=FitSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    # torch.manual_seed takes at most 2**64 - 1, and iteration n fits with seed + n.
    seed: int = Field(default=0, ge=0, lt=2**63)


# What ``--resume`` lets differ from the run's stored config: where the solves run (the dataset
# is the same on any executor, worker count or chunking) and how many iterations to run (the
# iterations done so far do not depend on it; it may not drop below them).
RESUME_MAY_DIFFER = ("executor.*", "dvp.iterations")


def resume_differences(stored: dict[str, Any], cfg: DVPConfig) -> list[str]:
    """The keys (dotted, with old and new values) where ``cfg`` differs from the config a run was
    started with, leaving out those in :data:`RESUME_MAY_DIFFER`."""
    try:  # a stored config fills in defaults just as the new one did
        stored = DVPConfig.model_validate(stored).model_dump(mode="json")
    except ValueError:
        pass  # compared as written: every key it has that differs is reported
    return config_differences(stored, cfg.model_dump(mode="json"), RESUME_MAY_DIFFER)


def load_dvp_config(path: str | Path, overrides: list[str] | None = None) -> DVPConfig:
    """Read, override and validate a DVP config (the same loader as the run config's)."""
    return load_yaml_model(
        path,
        DVPConfig,
        overrides,
        prepare=lambda raw, path: prepare_system(raw, path, SYSTEM_KINDS),
        drop=SYSTEM_KINDS,
    )
