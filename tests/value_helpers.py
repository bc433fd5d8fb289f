"""Small artifacts for tests: random weights, any metadata, written where a test wants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from learning import FeedForwardValueNet, ResidualValueNet, export_value
from mpc.config import Config
from mpc.robot_model import build_robot
from mpc.value.artifact import StateLayout, task_fingerprint


def make_artifact(
    path: Path,
    cfg: Config,
    *,
    kind: str = "residual",
    task_params=(),
    nx: int | None = None,
    robot_name: str | None = None,
    fingerprint: str | None = None,
    seed: int = 0,
    residual_dim: int = 16,
    edit=None,
) -> Path:
    """A random-weight value; ``edit(net)`` may change its (float64) weights before export."""
    _, robot = build_robot(cfg)
    nx = 2 * robot.nq if nx is None else nx
    n_in = nx + len(task_params)
    torch.manual_seed(seed)
    net = (
        ResidualValueNet(n_in, residual_dim=residual_dim)
        if kind == "residual"
        else FeedForwardValueNet(n_in)
    )
    net.double()
    if edit is not None:
        with torch.no_grad():
            edit(net)
    names = robot.joint_names if nx == 2 * robot.nq else [f"j{i}" for i in range(nx // 2)]
    export_value(
        net,
        path,
        state=StateLayout(robot=robot_name or cfg.robot.name, joint_names=names, nx=nx),
        task_params=list(task_params),
        task_fingerprint=fingerprint or task_fingerprint(cfg, task_params),
        algorithm="test-random",
    )
    return path


def random_states(cfg: Config, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q0 = np.asarray(cfg.robot.q0)
    return np.hstack([q0 + rng.normal(0, 0.3, (n, len(q0))), rng.normal(0, 0.5, (n, len(q0)))])
