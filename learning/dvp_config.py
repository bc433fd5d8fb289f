"""Configuration of a DVP training run (one YAML file, validated like the MPC's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mpc.config import apply_override, first_validation_error, read_yaml_sections
from mpc.errors import ConfigError

from .executors import ExecutorSpec
from .systems import SystemSpec

__all__ = ["DVPConfig", "DVPSpec", "NetworkSpec", "FitSpec", "ValidationSpec",
           "load_dvp_config", "system_from_json"]


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NetworkSpec(_S):
    kind: str = Field(default="residual", pattern="^(residual|feedforward)$")
    hidden: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=1)
    residual_dim: int = Field(default=16, ge=1)


class FitSpec(_S):
    epochs: int = Field(default=60, ge=1, description="per DVP iteration")
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    val_fraction: float = Field(default=0.05, ge=0, lt=1)


class DVPSpec(_S):
    iterations: int = Field(default=10, ge=1)
    samples: int = Field(default=400, ge=1, description="OCPs solved per iteration")
    horizon: int = Field(default=20, ge=1, description="knots of each OCP")
    record_nodes: int | None = Field(
        default=None, ge=1,
        description="record value samples at nodes 0..k-1 of each solution (None: all T)")
    maxiter: int = Field(default=200, ge=1, description="FDDP iterations per solve")
    sobolev_lambda: float = Field(default=1.0, ge=0, description="0 = plain regression")


class ValidationSpec(_S):
    samples: int = Field(default=100, ge=1)
    horizon_factor: int = Field(default=10, ge=2, description="ground truth horizon = this x T")
    maxiter: int = Field(default=500, ge=1)
    seed: int = Field(default=987654, description="held out: never a training seed")


class DVPConfig(_S):
    system: SystemSpec
    dvp: DVPSpec = Field(default_factory=DVPSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    fit: FitSpec = Field(default_factory=FitSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    seed: int = 0


_SYSTEM_ADAPTER = TypeAdapter(SystemSpec)


def system_from_json(text: str) -> Any:
    return _SYSTEM_ADAPTER.validate_json(text)


def load_dvp_config(path: str | Path, overrides: list[str] | None = None) -> DVPConfig:
    path = Path(path)
    raw = read_yaml_sections(path)  # a fresh dict: the overrides may edit it
    set_keys = [apply_override(raw, a) for a in overrides or []]
    system = raw.get("system")
    if isinstance(system, dict) and system.get("kind") not in ("pendulum", "cartpole", "unicycle", "arm"):
        raise ConfigError(str(path), "system.kind", f"unknown system {system.get('kind')!r} "
                          "(pendulum | cartpole | unicycle | arm)")
    if isinstance(system, dict) and system.get("kind") == "arm" and "config" in system:
        cfg_path = Path(system["config"])
        if not cfg_path.is_absolute() and not cfg_path.exists():
            system["config"] = str((path.parent / cfg_path).resolve())
    try:
        return DVPConfig.model_validate(raw)
    except ValidationError as exc:
        loc, msg = first_validation_error(exc, drop=("pendulum", "cartpole", "unicycle", "arm"))
        culprit = next((k for k in set_keys if loc == k or loc.startswith(k + ".")), None)
        raise ConfigError(str(path) if culprit is None else f"--set {culprit}", loc, msg) from None
