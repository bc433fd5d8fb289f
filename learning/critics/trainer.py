"""A critic run: Q-learning on the 1D toy or SAC / VG-SAC on a swing-up or the arm, in chunks of
``eval.every`` steps, each chunk evaluated, checkpointed atomically and logged.

A chunk k is: collect (SAC: one environment step, its Jacobians when the critic is first-order,
one update) x eval.every, evaluate, then save iteration k with the transitions the chunk added
(so the checkpoints hold the replay buffer once, not once per chunk), the networks, optimisers,
balancer and both RNG states. A resume rebuilds the buffer from the chunks and goes on from the
last intact one: the same seed gives the same run, killed or not. Every chunk starts a fresh
episode (``eval.every`` is a multiple of the episode length, so nothing is cut in a run that
never terminates early).

Outputs in the run folder: ``metrics.csv`` (one row per chunk), ``curves.png``,
``summary.json``, and for the toy the per-seed Table 1 errors.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mpc.errors import VmpcError
from mpc.io import atomic_write_bytes, atomic_write_text, write_csv_rows
from mpc.progress import progress_bar

from ..checkpoint import RunFolder
from ..configs import config_differences
from ..envs.arm import ArmReachEnv
from ..envs.swingup import SwingUpEnv
from ..envs.toy1d import Toy1DEnv, toy1d_optimum
from .config import RESUME_MAY_DIFFER, CriticConfig
from .qlearning import QLearningAgent, toy_errors
from .replay import REPLAY_KEYS, ReplayBuffer
from .sac import SACAgent

__all__ = ["CriticResult", "evaluate_policy", "make_env", "train_critic"]


@dataclass
class CriticResult:
    run: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


Env = SwingUpEnv | ArmReachEnv | Toy1DEnv


def make_env(cfg: CriticConfig) -> Env:
    if cfg.env.kind == "toy1d":
        return Toy1DEnv(cfg.env.horizon)
    if cfg.env.kind == "arm":
        return ArmReachEnv(cfg.env)
    return SwingUpEnv(cfg.env)


def _chunks(cfg: CriticConfig) -> int:
    return math.ceil(cfg.train.steps / cfg.eval.every)


def train_critic(
    cfg: CriticConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    config_text: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    seeds: int = 1,
    export: Path | None = None,
) -> CriticResult:
    """Run (or resume) one critic run into ``out``. ``seeds`` > 1 (Q-learning only) trains that
    many independent critics side by side (seeds cfg.seed, +1, ...; one ensemble, one folder).
    ``export`` (SAC on a swing-up or the arm): also write the critic's state value as a value
    artifact there, and as ``value.pt`` in the run folder."""
    out = Path(out)
    if seeds > 1 and cfg.algorithm != "qlearning":
        raise VmpcError("several seeds in one run is for Q-learning on the toy; run SAC per seed")
    if export is not None and (cfg.algorithm != "sac" or cfg.env.kind == "toy1d"):
        raise VmpcError(
            "--export writes a SAC critic's state value: it needs a swing-up or arm config"
        )
    keys = REPLAY_KEYS if cfg.algorithm == "sac" else ()
    with RunFolder(out, keys, ()) as run:
        resolved = {**cfg.model_dump(mode="json"), "seeds": seeds}  # the ensemble's shape too
        start = run.begin(
            resume,
            lambda stored: config_differences(stored, resolved, RESUME_MAY_DIFFER),
            RESUME_MAY_DIFFER,
            _chunks(cfg),
            "train.steps",
            "a critic run",
            log,
        )
        run.save_config(resolved, config_text)
        torch.set_num_threads(cfg.torch_threads)
        if cfg.algorithm == "qlearning":
            return _train_toy(cfg, out, run, start, seeds, progress, log)
        return _train_sac(cfg, out, run, start, progress, log, export)


def _bar(total: int, done: int, progress: bool, desc: str) -> Any:
    return progress_bar(total=total, initial=done, enabled=progress, desc=desc)


# -- Q-learning on the toy ------------------------------------------------------------------------
def _train_toy(cfg, out, run, start, seeds, progress, log) -> CriticResult:
    outputs = _Outputs(cfg, out)
    torch.manual_seed(cfg.seed)
    agent = QLearningAgent(cfg, seeds)
    rng = np.random.default_rng(cfg.seed)
    optimum = toy1d_optimum()
    metrics: list[dict[str, Any]] = []
    if start:
        _restore(run, start, agent, rng, metrics)
    every, steps = cfg.eval.every, cfg.train.steps
    with _bar(steps, min(start * every, steps), progress, "critic updates") as bar:
        for k in range(start, _chunks(cfg)):
            t0 = time.perf_counter()
            n = min(every, steps - k * every)
            sums: dict[str, float] = {}
            for _ in range(n):
                for key, v in agent.update(agent.sample(cfg.train.batch_size, rng)).items():
                    sums[key] = sums.get(key, 0.0) + v
                bar.update(1)
            err = toy_errors(agent.q, optimum)
            done = k * every + n
            row = {
                "chunk": k,
                "updates": done,
                "samples": done * cfg.train.batch_size,
                **{key: v / n for key, v in sums.items()},
                **_spread("q_mse", err[:, 0]),
                **_spread("grad_a_mse", err[:, 1]),
                **_spread("policy_mse", err[:, 2]),
                "wall_s": time.perf_counter() - t0,
            }
            row["per_seed"] = err.tolist()  # kept in metrics.json, dropped from the CSV
            metrics.append(row)
            _save(run, k, {}, agent, rng, row)
            outputs.write(metrics)
            log(
                f"updates {done}: Q* MSE {row['q_mse']:.3e}, grad_a Q* MSE "
                f"{row['grad_a_mse']:.3e}, policy MSE {row['policy_mse']:.3e}"
            )
    outputs.write(metrics, final=True)
    summary = _summary(cfg, metrics, seeds)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return CriticResult(out, metrics, summary)


def _spread(key: str, values: np.ndarray) -> dict[str, float]:
    return {key: float(np.mean(values)), f"{key}_std": float(np.std(values))}


# -- SAC / VG-SAC -------------------------------------------------------------------------------
def held_out_starts(cfg: CriticConfig, env: Env) -> list[np.ndarray]:
    """The evaluation episodes' start states: drawn once from eval.seed, never a training draw."""
    starts = []
    for i in range(cfg.eval.episodes):
        env.reset(seed=cfg.eval.seed + i)
        starts.append(env.state)
    return starts


def evaluate_policy(
    env: Env,
    act: Callable[[np.ndarray], np.ndarray],
    starts: list[np.ndarray],
    gamma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(returns, discounted returns) of the deterministic policy ``act`` from each start."""
    steps_before = env.steps
    returns, discounted = [], []
    for x0 in starts:
        obs, _ = env.reset(options={"state": x0})
        total, disc, weight = 0.0, 0.0, 1.0
        while True:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            disc += weight * float(r)
            weight *= gamma
            if term or trunc:
                break
        returns.append(total)
        discounted.append(disc)
    env.steps = steps_before  # evaluation is not training data
    return np.array(returns), np.array(discounted)


def _train_sac(cfg, out, run, start, progress, log, export) -> CriticResult:
    outputs = _Outputs(cfg, out)
    env = make_env(cfg)
    eval_env = make_env(cfg)
    starts = held_out_starts(cfg, eval_env)
    torch.manual_seed(cfg.seed)
    box = env.action_space
    assert isinstance(box, gym.spaces.Box)
    lb, ub = box.low.astype(np.float64), box.high.astype(np.float64)
    agent = SACAgent(cfg, env.nx, env.nu, (lb.tolist(), ub.tolist()), env.angles)
    rng = np.random.default_rng(cfg.seed)
    replay = ReplayBuffer(cfg.train.steps, env.nx, env.nu)
    metrics: list[dict[str, Any]] = []
    if start:
        _restore(run, start, agent, rng, metrics, replay)
    sob, t = cfg.sobolev, cfg.train
    every = cfg.eval.every
    jacobian_s = 0.0

    def act_det(obs: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(obs, dtype=torch.float32)[None]
        return agent.act(s, deterministic=True)[0].numpy().astype(np.float64)

    with _bar(t.steps, replay.size, progress, "environment steps") as bar:
        for k in range(start, _chunks(cfg)):
            t0 = time.perf_counter()
            first = replay.size
            n = min(every, t.steps - k * every)
            sums: dict[str, float] = {}
            updates = 0
            env.reset(seed=int(rng.integers(2**31)))
            for _ in range(n):
                x = env.state
                if replay.size < t.learning_starts:
                    u = rng.uniform(lb, ub)
                else:
                    s = torch.as_tensor(x, dtype=torch.float32)[None]
                    u = agent.act(s, deterministic=False)[0].numpy().astype(np.float64)
                _, r, term, trunc, _ = env.step(u)
                if sob.enabled:
                    tj = time.perf_counter()
                    f_x, f_u, r_x, r_u = env.derivatives(x, u, sob.jacobians)
                    jacobian_s += time.perf_counter() - tj
                else:
                    f_x = f_u = r_x = r_u = 0.0
                replay.add(
                    s=x, a=u, r=float(r), s2=env.state, done=float(term),
                    f_x=f_x, f_u=f_u, r_x=r_x, r_u=r_u,
                )  # fmt: skip
                if term or trunc:
                    env.reset(seed=int(rng.integers(2**31)))
                if replay.size >= max(t.learning_starts, t.batch_size):
                    for key, v in agent.update(replay.sample(t.batch_size, rng)).items():
                        sums[key] = sums.get(key, 0.0) + v
                    updates += 1
                bar.update(1)
            returns, disc = evaluate_policy(eval_env, act_det, starts, t.gamma)
            with torch.no_grad():
                v0 = agent.value(torch.as_tensor(np.array(starts), dtype=torch.float32)).numpy()
            row = {
                "chunk": k,
                "env_steps": replay.size,
                "samples": replay.size,
                "updates": updates,
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "return_min": float(returns.min()),
                # The critic's V(s0) against the discounted return the policy then earns: not a
                # ground truth for the soft Q of a stochastic policy, but its drift shows.
                "critic_gap": float(np.mean(v0 - disc)),
                **{key: v / max(updates, 1) for key, v in sums.items()},
                "nonfinite_episodes": int(getattr(env, "nonfinite", 0)),
                "jacobian_s": jacobian_s,
                "wall_s": time.perf_counter() - t0,
            }
            jacobian_s = 0.0
            metrics.append(row)
            _save(run, k, replay.chunk_since(first), agent, rng, row)
            outputs.write(metrics)
            log(
                f"steps {replay.size}: return {row['return_mean']:.2f} +- {row['return_std']:.2f}"
                f" (min {row['return_min']:.2f}), critic gap {row['critic_gap']:.2f}, "
                f"alpha {row.get('alpha', float('nan')):.3f}"
            )
    outputs.write(metrics, final=True)
    summary = _summary(cfg, metrics, 1)
    if export is not None:
        summary["value_fit"] = _export_value(
            cfg, agent, env, replay, rng, [out / "value.pt", export]
        )
        log(f"critic value distilled: {summary['value_fit']}")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return CriticResult(out, metrics, summary)


def _export_value(cfg, agent, env, replay, rng, paths: list[Path]) -> dict[str, float]:
    from .export import export_critic_value

    states = replay.chunk_since(0)["s"]
    states = states[rng.permutation(len(states))[:20_000]]
    _, fit = export_critic_value(agent, cfg, env, states, Path(paths[0]))
    for path in paths[1:]:  # the same bytes: one fit, one artifact
        atomic_write_bytes(Path(path), Path(paths[0]).read_bytes())
    return {k: float(v) for k, v in fit.items()}


# -- checkpoints and outputs ----------------------------------------------------------------------
def _save(run: RunFolder, k: int, dataset, agent, rng, row) -> None:
    run.save_iteration(
        k,
        dataset=dataset,
        model=agent.state_dict(),
        optim=agent.optim_state(),
        rng=dict(rng.bit_generator.state),
        torch_rng=torch.get_rng_state(),
        metrics=row,
    )


def _restore(run: RunFolder, start: int, agent, rng, metrics, replay=None) -> None:
    for n in range(start):
        it = run.load_iteration(n, dataset=replay is not None)
        metrics.append(it["metrics"])
        if replay is not None:
            replay.extend(it["dataset"])
    agent.load_state_dict(it["model"])
    agent.load_optim_state(it["optim"])
    rng.bit_generator.state = it["rng"]
    torch.set_rng_state(it["torch_rng"])


class _Outputs:
    """metrics.csv after every chunk; curves.png at most every PLOT_EVERY_S seconds (a figure
    costs 0.5-3 s) and at the end."""

    PLOT_EVERY_S = 30.0

    def __init__(self, cfg: CriticConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self._plotted = time.monotonic()  # the first figure after PLOT_EVERY_S, or at the end

    def write(self, metrics: list[dict[str, Any]], *, final: bool = False) -> None:
        from .plots import plot_run

        rows = [{k: v for k, v in m.items() if k != "per_seed"} for m in metrics]
        write_csv_rows(self.out / "metrics.csv", rows)
        now = time.monotonic()
        if final or now - self._plotted >= self.PLOT_EVERY_S:
            plot_run(self.cfg, metrics, self.out / "curves.png")
            self._plotted = now


def _summary(cfg: CriticConfig, metrics: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    last = metrics[-1]
    out: dict[str, Any] = {
        "env": cfg.task_name,
        "algorithm": cfg.algorithm,
        "sobolev": cfg.sobolev.enabled,
        "jacobians": cfg.sobolev.jacobians if cfg.sobolev.enabled else None,
        "critic": cfg.critic.kind,
        "seed": cfg.seed,
        "seeds": seeds,
        "chunks": len(metrics),
        "wall_s": float(sum(m["wall_s"] for m in metrics)),
    }
    if cfg.algorithm == "qlearning":
        out.update({k: last[k] for k in last if k.endswith(("_mse", "_mse_std"))})
        out["updates"] = last["updates"]
        out["per_seed"] = last.get("per_seed")
    else:
        out.update(
            {
                "env_steps": last["env_steps"],
                "final_return_mean": last["return_mean"],
                "best_return_mean": max(m["return_mean"] for m in metrics),
                "curve": [[m["env_steps"], m["return_mean"]] for m in metrics],
            }
        )
    return out
