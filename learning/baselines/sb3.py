"""The model-free reference of Le Lidec et al.'s Fig. 3: PPO and SAC (stable-baselines3) on the
OCP family of a PDDP / PLAL config, scored like PLAL.

The environment is :class:`~learning.envs.ocp_env.OCPEnv` (reward = minus the OC cost, horizon
``problems.horizon``). The held-out problems and their TO optimum J* are those of the PLAL trainer
(the same ``validation`` rows, seed and solver budget), and the score is the same J(pi)/J*,
measured by the same :class:`~learning.plal.oc_phase.Rollouts` on the deterministic policy. The
budget is counted in simulator calls (dynamics evaluations), the unit PLAL's metrics.csv logs, so
the two runs compare on one axis. The networks are the PLAL policy's (``policy.hidden`` and
``policy.activation``, 2x256 ReLU in the shipped configs); everything else is SB3's defaults.

Nothing is saved but metrics and a summary: an SB3 model file is a pickle, and this project loads
no pickle, so there is no loader either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from mpc.errors import VmpcError
from mpc.io import atomic_write_text
from mpc.progress import progress_bar

from ..envs.ocp_env import OCPEnv
from ..executors import InlineExecutor
from ..plal.config import PLALConfig
from ..plal.oc_phase import Rollouts, build_worker, worker_context
from ..plal.systems import make_family
from ..plal.trainer import held_out_set
from .report import plot_convergence, write_metrics

__all__ = ["ALGORITHMS", "Algorithm", "BaselineError", "SB3Policy", "train_baseline"]

Algorithm = Literal["ppo", "sac"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
# The held-out median J(pi)/J* levels whose first crossing the summary records (in simulator
# calls): the numbers to set against PLAL's calls for the same level.
RATIO_LEVELS = (2.0, 1.5, 1.1, 1.05, 1.01)
# convergence.png is redrawn during a run at most this often [s], and always at its end.
PLOT_EVERY_S = 30.0


class BaselineError(VmpcError):
    """A baseline run that cannot start as asked (unknown algorithm, bad budget, used folder)."""


class SB3Policy:
    """An SB3 model as the :class:`~learning.plal.oc_phase.Policy` of :class:`Rollouts`: the
    deterministic action for [x, theta] (float32, the env's observation type), mapped from the
    learner's [-1, 1] into the control box as the training env mapped it, and clipped there."""

    def __init__(
        self,
        model: Any,
        to_box: Callable[[np.ndarray], np.ndarray],
        box: tuple[np.ndarray, np.ndarray],
    ) -> None:
        self.model, self.to_box = model, to_box
        self.lb, self.ub = box

    def action(self, z: np.ndarray) -> np.ndarray:
        a, _ = self.model.predict(np.asarray(z, dtype=np.float32), deterministic=True)
        u = self.to_box(np.asarray(a, dtype=np.float64))
        return np.clip(np.asarray(u, dtype=np.float64), self.lb, self.ub)


def _make_model(algo: str, env: Any, cfg: PLALConfig, hyperparameters: Mapping[str, Any]) -> Any:
    import torch
    from stable_baselines3 import PPO, SAC

    hidden = list(cfg.policy.hidden)
    activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[cfg.policy.activation]
    critic = "vf" if algo == "ppo" else "qf"
    kwargs: dict[str, Any] = {
        "policy_kwargs": {
            "net_arch": {"pi": hidden, critic: hidden},
            "activation_fn": activation,
        },
        "seed": cfg.seed,
        "device": "cpu",
        "verbose": 0,
        **hyperparameters,
    }
    cls = PPO if algo == "ppo" else SAC
    try:
        return cls("MlpPolicy", env, **kwargs)
    except TypeError as exc:  # an unknown hyperparameter name
        raise BaselineError(f"{algo}: {exc}") from None


def _scores(costs: np.ndarray, j_star: np.ndarray) -> dict[str, float]:
    ratio = costs / np.maximum(j_star, 1e-12)
    return {
        "policy_cost_ratio": float(np.median(ratio)),
        "policy_cost_ratio_mean": float(np.mean(ratio)),
        "policy_cost_ratio_p90": float(np.quantile(ratio, 0.9)),
    }


class _Scoreboard:
    """The periodic evaluation: held-out J(pi)/J* of the deterministic policy, one metrics row
    per call, metrics.csv rewritten each time and convergence.png at most every PLOT_EVERY_S."""

    def __init__(
        self,
        policy: SB3Policy,
        roll: Rollouts,
        val: dict[str, np.ndarray],
        env: OCPEnv,
        out: Path,
        title: str,
    ) -> None:
        self.policy, self.roll, self.val, self.env, self.out = policy, roll, val, env, out
        self.title = title
        self.metrics: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.eval_s = 0.0
        self.plotted = -np.inf

    def __call__(self, env_steps: int, log: Callable[[str], None]) -> None:
        t_eval = time.perf_counter()
        scores = _scores(self.roll.run(self.policy, self.val["rows"])[2], self.val["cost"])
        self.eval_s += time.perf_counter() - t_eval
        wall = time.perf_counter() - self.t0
        self.metrics.append(
            {
                "env_steps": env_steps,
                "sim_calls_total": self.env.steps,
                **scores,
                "nonfinite_episodes": self.env.nonfinite,
                "train_s": wall - self.eval_s,
                "wall_s": wall,
            }
        )
        write_metrics(self.out / "metrics.csv", self.metrics)
        if wall - self.plotted >= PLOT_EVERY_S:
            self.plot()
            self.plotted = wall
        log(
            f"{env_steps} steps: J(pi)/J* {scores['policy_cost_ratio']:.4f} median, "
            f"{scores['policy_cost_ratio_p90']:.4f} p90"
        )

    def plot(self) -> None:
        plot_convergence(self.metrics, self.out / "convergence.png", self.title)


def train_baseline(
    cfg: PLALConfig,
    algo: str,
    steps: int,
    out: Path,
    eval_every: int,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``algo`` (ppo | sac) for ``steps`` env steps (PPO rounds up to whole rollouts of
    ``n_steps``) on ``cfg``'s family, scoring the held-out J(pi)/J* before training, every
    ``eval_every`` steps and at the end. Writes config.yaml, metrics.csv, convergence.png and
    summary.json into ``out`` (which must not hold a run yet); returns the summary.
    ``hyperparameters`` override SB3's defaults (e.g. ``n_steps`` for tiny PPO runs)."""
    if algo not in ALGORITHMS:
        raise BaselineError(f"unknown algorithm {algo!r} ({' | '.join(ALGORITHMS)})")
    if steps < 1 or eval_every < 1:
        raise BaselineError(f"steps ({steps}) and eval_every ({eval_every}) must be >= 1")
    out = Path(out)
    if (out / "metrics.csv").exists() or (out / "summary.json").exists():
        raise BaselineError(f"{out} already holds a run: choose another --out")
    hp = dict(hyperparameters or {})
    # What the run folder records of them: JSON values, anything else (a class) by its repr.
    hp_record = json.loads(json.dumps(hp, default=repr))

    import gymnasium
    import stable_baselines3
    import torch
    import yaml
    from gymnasium.wrappers import RescaleAction
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)  # small networks; one thread keeps runs reproducible
    P = cfg.problems
    family = make_family(cfg.system, P.terminal_weight)
    ocp_env = OCPEnv(family, P.horizon)
    # SB3 advises a [-1, 1] action box (its PPO explores with a unit std); SAC rescales anyway.
    unit = np.ones(family.nu, dtype=np.float32)
    env = RescaleAction(ocp_env, -unit, unit)
    model = _make_model(algo, env, cfg, hp)  # first: a bad hyperparameter fails before any work

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "config.yaml",
        yaml.safe_dump(
            {
                "baseline": {
                    "algorithm": algo,
                    "steps": steps,
                    "eval_every": eval_every,
                    "hyperparameters": hp_record,
                }
            }
            | cfg.model_dump(mode="json"),
            sort_keys=False,
        ),
    )
    # The PLAL trainer's held-out set: same rows, same solver budget, so the same J*.
    v_rows = family.sample(cfg.validation.samples, np.random.default_rng(cfg.validation.seed))
    val = held_out_set(
        InlineExecutor(build_worker, worker_context(cfg)),
        family,
        v_rows,
        P.horizon,
        cfg.validation.maxiter,
        progress,
    )
    policy = SB3Policy(model, env.action, family.control_box())
    title = f"{algo.upper()} on {family.name} (T={P.horizon})"
    board = _Scoreboard(policy, Rollouts(family, P.horizon), val, ocp_env, out, title)
    bar = progress_bar(total=steps, desc=title, unit="step", enabled=progress)

    class Periodic(BaseCallback):
        """Scores the policy every ``eval_every`` env steps (one env: one step per call)."""

        def _on_step(self) -> bool:
            bar.update(1)
            if self.num_timesteps % eval_every == 0:
                board(self.num_timesteps, log)
            return True

    with bar:
        board(0, log)
        model.learn(total_timesteps=steps, callback=Periodic())
    if board.metrics[-1]["env_steps"] != model.num_timesteps:
        board(int(model.num_timesteps), log)
    board.plot()

    metrics = board.metrics
    last = metrics[-1]
    summary: dict[str, Any] = {
        "algorithm": algo,
        "system": family.name,
        "horizon": P.horizon,
        "held_out_problems": int(len(val["cost"])),
        "env_steps": last["env_steps"],
        "sim_calls_total": last["sim_calls_total"],
        "policy_cost_ratio_median": last["policy_cost_ratio"],
        "policy_cost_ratio_mean": last["policy_cost_ratio_mean"],
        "policy_cost_ratio_p90": last["policy_cost_ratio_p90"],
        "best_policy_cost_ratio_median": min(m["policy_cost_ratio"] for m in metrics),
        # First simulator-call count at which the median reached each level (None: never).
        "sim_calls_to_ratio": {
            str(level): next(
                (m["sim_calls_total"] for m in metrics if m["policy_cost_ratio"] <= level), None
            )
            for level in RATIO_LEVELS
        },
        "nonfinite_episodes": ocp_env.nonfinite,
        "train_s": last["train_s"],
        "wall_s": last["wall_s"],
        "hyperparameters": hp_record,
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__,
            "torch": torch.__version__,
        },
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary
