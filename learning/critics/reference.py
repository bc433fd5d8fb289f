"""stable-baselines3's SAC on a critic config's environment, scored like our runs: the same
held-out start states, the same deterministic-policy return, every ``eval.every`` steps. It is
the reference that shows our value-only SAC is a fair SAC. Only numbers are kept: an SB3 model
file is a pickle, and this project loads none."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mpc.io import atomic_write_text

from .config import CriticConfig
from .trainer import evaluate_policy, held_out_starts, make_env

__all__ = ["sb3_sac_reference"]


def sb3_sac_reference(
    cfg: CriticConfig, out: Path, *, log: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    env, eval_env = make_env(cfg), make_env(cfg)
    starts = held_out_starts(cfg, eval_env)
    t = cfg.train
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=t.lr,
        buffer_size=t.steps,
        learning_starts=t.learning_starts,
        batch_size=t.batch_size,
        tau=t.tau,
        gamma=t.gamma,
        ent_coef="auto" if t.alpha == "auto" else float(t.alpha),
        policy_kwargs={"net_arch": {"pi": cfg.actor.hidden, "qf": cfg.critic.hidden}},
        seed=cfg.seed,
        device="cpu",
    )
    curve: list[list[float]] = []
    t0 = time.perf_counter()

    class _Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % cfg.eval.every == 0:
                act = lambda obs: model.predict(obs, deterministic=True)[0].astype(np.float64)  # noqa: E731
                returns, _ = evaluate_policy(eval_env, act, starts, t.gamma)
                curve.append([self.num_timesteps, float(returns.mean())])
                log(f"sb3 SAC steps {self.num_timesteps}: return {returns.mean():.2f}")
            return True

    model.learn(total_timesteps=t.steps, callback=_Eval())
    summary = {
        "algorithm": "sb3-sac",
        "env_steps": t.steps,
        "final_return_mean": curve[-1][1] if curve else float("nan"),
        "curve": curve,
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary
