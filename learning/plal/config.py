"""Configuration of a PDDP / PLAL run (one YAML file, validated like every other config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mpc.config import load_yaml_model
from sim.specs import Strict

from ..configs import config_differences, prepare_system
from ..executors import ExecutorSpec
from .systems import POLICY_SYSTEM_KINDS, PolicySystemSpec

__all__ = [
    "RESUME_MAY_DIFFER",
    "AlgorithmSpec",
    "PLALConfig",
    "PolicyFitSpec",
    "PolicySpec",
    "ProblemsSpec",
    "load_plal_config",
    "resume_differences",
]


class AlgorithmSpec(Strict):
    kind: Literal["plal", "pddp"] = Field(
        default="plal", description="plal: ADMM (Alg. 2); pddp: projected DDP (Alg. 1)"
    )
    sobolev: float = Field(
        default=1.0,
        ge=0,
        description="weight of the stochastic Sobolev term on the DDP gains (+S); 0 = off",
    )
    constrained: bool = Field(
        default=True,
        description="the control box inside the OC phase (BoxFDDP); false is the -C ablation "
        "(FDDP, unconstrained; PDDP with false is PODS-like)",
    )
    multiple_shooting: bool = Field(
        default=False, description="+M: decouple the OC states from the policy's (PLAL only)"
    )
    mu: float = Field(default=1.0, gt=0, description="augmented-Lagrangian penalty (PLAL)")
    mu_growth: float = Field(default=1.0, ge=1, description="mu <- min(mu * this, mu_max)")
    mu_max: float = Field(default=1e3, gt=0)

    @model_validator(mode="after")
    def _plal_only(self) -> AlgorithmSpec:
        if self.multiple_shooting and self.kind != "plal":
            raise ValueError("multiple_shooting needs kind: plal (PDDP has no consensus term)")
        return self


class ProblemsSpec(Strict):
    samples: int = Field(default=64, ge=1, description="OCPs (fixed for the whole run)")
    horizon: int = Field(default=60, ge=1, description="knots of each OCP")
    maxiter: int = Field(default=100, ge=1, description="solver iterations per OC phase")
    terminal_weight: float = Field(default=10.0, ge=0, description="x running state cost")


class PolicySpec(Strict):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: Literal["relu", "tanh"] = "relu"


class PolicyFitSpec(Strict):
    epochs: int = Field(default=20, ge=1, description="per iteration")
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)


class ValidationSpec(Strict):
    samples: int = Field(default=32, ge=1, description="held-out problems")
    maxiter: int = Field(default=500, ge=1, description="for their TO optimum")
    seed: int = Field(default=987654, ge=0, description="held out: never a training seed")


class PLALConfig(Strict):
    system: PolicySystemSpec
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    iterations: int = Field(default=20, ge=1)
    problems: ProblemsSpec = Field(default_factory=ProblemsSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    fit: PolicyFitSpec = Field(default_factory=PolicyFitSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    seed: int = Field(default=0, ge=0, lt=2**63)


# What --resume may change: where the solves run, and how many iterations (not below those done).
RESUME_MAY_DIFFER = ("executor.*", "iterations")


def resume_differences(stored: dict[str, Any], cfg: PLALConfig) -> list[str]:
    try:
        stored = PLALConfig.model_validate(stored).model_dump(mode="json")
    except ValueError:
        pass
    return config_differences(stored, cfg.model_dump(mode="json"), RESUME_MAY_DIFFER)


def load_plal_config(
    path: str | Path, overrides: list[str] | None = None, kind: str | None = None
) -> PLALConfig:
    """Read, override and validate a policy-learning config; ``kind`` (the CLI verb: plal or
    pddp) sets ``algorithm.kind``."""
    extra = list(overrides or [])
    if kind is not None:
        extra.insert(0, f"algorithm.kind={kind}")
    return load_yaml_model(
        path,
        PLALConfig,
        extra,
        prepare=lambda raw, path: prepare_system(raw, path, POLICY_SYSTEM_KINDS),
        drop=POLICY_SYSTEM_KINDS,
    )
