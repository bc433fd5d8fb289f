"""Held-out episodes: starts, targets, push directions and plant seeds, from the eval stream.

Episodes come from an RNG stream of their own (``SeedSequence(seed, spawn_key=(EVAL_STREAM,))``)
that no trainer draws from; every controller and both push variants share them.
:func:`config_episode` is the one episode of a config's own run (``vmpc eval compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpc.config import Config
from mpc.errors import ModelError, VmpcError
from mpc.ocp import QuadraticTerminal, ReachingOCP
from mpc.robot_model import RobotModel, build_robot

from .settings import EVAL_STREAM, JOINT_MARGIN_RAD, MAX_DRAWS, MIN_START_DISTANCE_M, PushSetup

__all__ = ["Episode", "config_episode", "draw_episodes"]


@dataclass
class Episode:
    """One held-out problem, shared by every controller and both push variants."""

    index: int
    q0: list[float]  # [rad], zero initial velocity
    target: list[float]  # EE target [m], world
    push_force: list[float]  # [N], world; applied only in the "push" variant
    run_seed: int  # run.seed: measurement-noise and mismatch streams of the plant
    start_ee: list[float]  # EE position at q0 [m], world
    start_distance_m: float  # |start EE - target|


def _joint_box(robot: RobotModel) -> tuple[np.ndarray, np.ndarray]:
    # Continuous joints report huge limits: keep starts within +-pi there.
    lo = np.maximum(robot.q_lower, -math.pi) + JOINT_MARGIN_RAD
    hi = np.minimum(robot.q_upper, math.pi) - JOINT_MARGIN_RAD
    return lo, hi


def draw_episodes(
    cfg: Config,
    n: int,
    *,
    target_conditioned: bool,
    seed: int,
    q_spread_rad: float = 0.3,
    push_force_n: float = 50.0,
    target_box: tuple[Sequence[float], Sequence[float]] | None = None,
) -> list[Episode]:
    """``n`` held-out episodes: q0 + U(-q_spread, q_spread) clipped inside the joint limits with
    a margin, zero velocity; a reachable target drawn uniformly in ``task.workspace`` (cut to
    ``target_box``, the box a conditioned value was trained for) when the value is
    target-conditioned, else the config's target; the start EE >= 0.15 m from it; a push
    direction uniform on the sphere and a plant seed.

    A drawn target is kept only if a long-horizon solve (3 s) from the start brings the EE
    within 1 cm of it: the reach-radius test alone admits targets inside the base column or
    beyond the joint limits, which no controller reaches and which then dominate the study."""
    _, robot = build_robot(cfg)
    probe_T = max(1, int(round(3.0 / cfg.ocp.dt)))
    probe = ReachingOCP(
        robot,
        cfg.ocp.model_copy(update={"horizon": probe_T}),
        np.asarray(cfg.task.target, float),
        QuadraticTerminal(cfg.ocp.terminal),
    )

    def feasible(q: np.ndarray, target: np.ndarray) -> bool:
        x0 = np.concatenate([q, np.zeros(robot.nq)])
        probe.set_target(target)
        probe.problem.x0 = x0
        probe.solver.solve([x0] * (probe_T + 1), [robot.gravity_torques(q)] * probe_T, 200, False)
        end = robot.ee_position_world(np.asarray(probe.solver.xs[-1])[: robot.nq])
        return bool(np.linalg.norm(end - target) <= 0.01)

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,)))
    q_nom = np.asarray(cfg.robot.q0, float)
    lo, hi = _joint_box(robot)
    ws_lo, ws_hi = np.asarray(cfg.task.workspace.min), np.asarray(cfg.task.workspace.max)
    if target_box is not None:
        ws_lo = np.maximum(ws_lo, np.asarray(target_box[0], float))
        ws_hi = np.minimum(ws_hi, np.asarray(target_box[1], float))
        if (ws_lo > ws_hi).any():
            raise VmpcError(
                f"{cfg.source}: the value's target box {list(target_box)} does not "
                "overlap task.workspace"
            )
    episodes: list[Episode] = []
    draws = 0
    while len(episodes) < n:
        draws += 1
        if draws > MAX_DRAWS:
            raise VmpcError(
                f"{cfg.source}: could not draw {n} episodes with the start EE >= "
                f"{MIN_START_DISTANCE_M} m from a reachable target in {MAX_DRAWS} "
                f"tries; check task.workspace, robot.q0 and --q-spread"
            )
        q = np.clip(q_nom + rng.uniform(-q_spread_rad, q_spread_rad, q_nom.size), lo, hi)
        q = np.round(q, 6)  # micro-radians: readable records, still exact in the replayed config
        ee = robot.ee_position_world(q)
        if target_conditioned:
            target = np.round(rng.uniform(ws_lo, ws_hi), 6)
            try:
                robot.check_reachable(target)
            except ModelError:
                continue
        else:
            target = np.asarray(cfg.task.target, float)
        dist = float(np.linalg.norm(ee - target))
        if dist < MIN_START_DISTANCE_M:
            continue
        if target_conditioned and not feasible(q, target):
            continue
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        episodes.append(
            Episode(
                index=len(episodes),
                q0=q.tolist(),
                target=target.tolist(),
                push_force=np.round(push_force_n * direction, 6).tolist(),
                run_seed=int(rng.integers(0, 2**31 - 1)),
                start_ee=ee.tolist(),
                start_distance_m=dist,
            )
        )
    return episodes


def config_episode(cfg: Config) -> tuple[Episode, PushSetup | None]:
    """The config's own run as an episode: its ``robot.q0`` (at rest), ``task.target`` and
    ``run.seed``, and its first scheduled push (None without one). The push must be a force on
    the EE, the only push the study applies."""
    _, robot = build_robot(cfg)
    q0 = np.asarray(cfg.robot.q0, float)
    target = np.asarray(cfg.task.target, float)
    ee = robot.ee_position_world(q0)
    push, force = None, [0.0, 0.0, 0.0]
    if cfg.disturbances.schedule:
        first = cfg.disturbances.schedule[0]
        if any(first.torque) or first.link is not None:
            raise VmpcError(
                f"{cfg.source}: disturbances.schedule[0] has a torque or a link; the study "
                "applies a force on the EE only"
            )
        force = [float(f) for f in first.force]
        push = PushSetup(float(np.linalg.norm(force)), first.duration, first.start)
    episode = Episode(
        index=0,
        q0=q0.tolist(),
        target=target.tolist(),
        push_force=force,
        run_seed=cfg.run.seed,
        start_ee=ee.tolist(),
        start_distance_m=float(np.linalg.norm(ee - target)),
    )
    return episode, push
