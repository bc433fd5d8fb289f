"""A SAC critic as a terminal value: V(s) = -min_j Q_j(s, mu(s)) (a cost-to-go, the sign of the
project's values), less its minimum over the distillation states (a constant, which moves no
minimiser of the MPC: SAC's soft Q holds an entropy bonus that makes -Q negative where V =
||r||^2 cannot go), distilled into the residual value network V = ||r(s)||^2 and written as a
value artifact (format v2) that the MPC's loaders read like a DVP value.

The critic is an MLP on (cos, sin) features with its own input layout, so it is not shipped as
it is: a Sobolev fit (:func:`learning.sobolev.fit_sobolev`, the fit DVP uses) matches V and its
total derivative dV/ds (through mu as well) on the states of the replay buffer, where the critic
was trained. On a swing-up the task fingerprint hashes the environment section and the
discount: this value is a discounted, infinite-horizon cost-to-go of that task, not the
finite-horizon one a DVP value of the same system holds, and the two must never pass for each
other. On the arm it is the MPC config's own fingerprint (the reward is that config's running
cost): the critic is made to end that MPC's horizon, side by side with the DVP value of the same
config, and its discount is written in the notes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpc.value.artifact import TrainedWith, ValueMetadata

from ..datasets import ValueDataset
from ..envs.arm import ArmReachEnv
from ..export import export_value
from ..networks import ResidualValueNet
from ..sobolev import SobolevFitSpec, fit_sobolev
from .config import CriticConfig
from .sac import SACAgent

__all__ = ["critic_fingerprint", "critic_value_dataset", "export_critic_value"]


def critic_fingerprint(cfg: CriticConfig, env: Any = None) -> str:
    """The value's task fingerprint: the MPC's own on the arm (``env`` an ArmReachEnv)."""
    if isinstance(env, ArmReachEnv):
        return env.value_fingerprint()
    section = {"env": cfg.env.model_dump(mode="json"), "gamma": cfg.train.gamma}
    blob = json.dumps(section, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def critic_value_dataset(agent: SACAgent, states: np.ndarray) -> ValueDataset:
    """V(s) = -min_j Q_j(s, mu(s)) and dV/ds by autograd, at ``states``."""
    s = torch.as_tensor(states, dtype=torch.float32).requires_grad_(True)
    v = -agent.value(s)
    (g,) = torch.autograd.grad(v.sum(), s)
    return ValueDataset(
        z=np.asarray(states, dtype=np.float64),
        value=v.detach().double().numpy(),
        grad_x=g.double().numpy(),
        nx=states.shape[1],
    )


def export_critic_value(
    agent: SACAgent,
    cfg: CriticConfig,
    env: Any,
    states: np.ndarray,
    path: Path,
    *,
    fit: SobolevFitSpec | None = None,
    progress: bool = False,
) -> tuple[ValueMetadata, dict[str, Any]]:
    """Distil the critic's state value on ``states`` (of ``env``: a SwingUpEnv or an
    ArmReachEnv, which give the state layout, the knot dt and the fingerprint) and write the
    artifact to ``path``; returns its metadata and the fit's relative errors on the held-out
    tenth."""
    data = critic_value_dataset(agent, states)
    # SAC's soft Q holds the future entropy bonus, so -Q is negative on many states (most of the
    # arm's), which V = ||r||^2 cannot be. A constant changes no minimiser of the MPC (nor the
    # Sobolev fit's gradient term): the value is shifted to 0 at its minimum over the states.
    offset = float(data.value.min())
    data = replace(data, value=data.value - offset)
    nx = data.nx
    net = ResidualValueNet(nx, hidden=(64, 64, 64), residual_dim=16)
    spec = fit or SobolevFitSpec(epochs=200, batch_size=256, lr=3e-3)
    result = fit_sobolev(net, data, spec, progress=progress)
    lo, hi = states.min(axis=0).tolist(), states.max(axis=0).tolist()
    kind = "vg-sac" if cfg.sobolev.enabled else "sac"
    meta = export_value(
        net,
        path,
        state=env.state_layout(),
        task_params=[],
        task_fingerprint=critic_fingerprint(cfg, env),
        algorithm=kind,
        trained=TrainedWith(dt=float(env.dt), state_box=(lo, hi)),
        samples=len(states),
        notes=f"{kind} critic distilled: V(s) = -min_j Q_j(s, mu(s)) - ({offset:.6g}), "
        f"discount {cfg.train.gamma}, on {len(states)} replay states",
    )
    return meta, {**result.final, "offset": offset}
