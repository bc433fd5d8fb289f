"""The arm: the MPC's own reaching OCP (same robot, same running cost), with a fixed target or
conditioned on the target."""

from __future__ import annotations

from typing import Any

import crocoddyl
import numpy as np

from mpc.config import load_config
from mpc.errors import VmpcError
from mpc.ocp import NoTerminal, ReachingOCP, TerminalCost
from mpc.robot_model import build_robot
from mpc.value.artifact import TARGET_PARAMS, StateLayout, task_fingerprint
from mpc.value.features import FeatureMap

from .base import System
from .croc import ZeroTerminal
from .specs import ArmSpec

__all__ = ["ArmSystem"]


class ArmSystem(System):
    name = "arm"

    def __init__(self, spec: ArmSpec) -> None:
        super().__init__()
        self.spec = spec
        self.cfg = load_config(spec.config, spec.set)
        _, self.robot = build_robot(self.cfg)
        self.nx, self.nu, self.dt = 2 * self.robot.nq, self.robot.nq, self.cfg.ocp.dt
        self.task_params = list(TARGET_PARAMS) if spec.conditioned else []
        q0, nq = np.asarray(self.cfg.robot.q0), self.robot.nq
        self.q_lo, self.q_hi = q0 - spec.q_spread, q0 + spec.q_spread
        if (self.q_lo < self.robot.q_lower).any() or (self.q_hi > self.robot.q_upper).any():
            bad = [
                self.robot.joint_names[i]
                for i in range(nq)
                if self.q_lo[i] < self.robot.q_lower[i] or self.q_hi[i] > self.robot.q_upper[i]
            ]
            raise VmpcError(
                f"system.q_spread: the sampling box q0 +- {spec.q_spread} rad leaves "
                f"the joint limits of {', '.join(bad)}"
            )
        ws = self.cfg.task.workspace
        box = spec.target_box or (ws.min, ws.max)
        self.target_lo, self.target_hi = (np.asarray(b, float) for b in box)
        if (self.target_lo > self.target_hi).any():
            raise VmpcError("system.target_box: min must be <= max on every axis")
        if (self.target_lo < ws.min).any() or (self.target_hi > ws.max).any():
            raise VmpcError(
                f"system.target_box: {[list(b) for b in box]} leaves the config's "
                f"task.workspace {[list(ws.min), list(ws.max)]}"
            )
        self._ocps: dict[int, Any] = {}
        self.feature_robot = self.robot
        self.goal_target = np.asarray(self.cfg.task.target, dtype=float)

    def lift(self, features: list[str], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fmap = FeatureMap(self.robot.model, self.robot.ee_frame_id, features)
        xs = z[:, : self.nx]
        if self.spec.conditioned:
            targets = z[:, self.nx : self.nx + len(TARGET_PARAMS)]
        else:
            assert self.goal_target is not None
            targets = np.tile(self.goal_target, (len(z), 1))
        phis, jacs = fmap.batch(xs, targets)
        return np.hstack([z, phis]), jacs

    def state_layout(self) -> StateLayout:
        return StateLayout(
            robot=self.cfg.robot.name, joint_names=self.robot.joint_names, nx=self.nx
        )

    def fingerprint(self, spec_json: str) -> str:
        """The MPC's own task fingerprint, so the value swaps into that MPC."""
        return task_fingerprint(self.cfg, self.task_params)

    def check_ready(self) -> None:
        goal_cost = self.check_goal_cost()
        if goal_cost > 1e-6:
            raise VmpcError(
                f"system.config: the running cost is {goal_cost:.3g} at rest at the "
                "target, so the value grows without bound; turn the posture term "
                "off (ocp.costs.state_reg_q: 0)"
            )

    def task_box(self) -> tuple[list[float], list[float]] | None:
        """(min, max) of the targets trained on, for a conditioned value's metadata."""
        return (self.target_lo.tolist(), self.target_hi.tolist()) if self.spec.conditioned else None

    @property
    def state(self) -> crocoddyl.StateAbstract:
        return self._any_ocp().state

    def _any_ocp(self):
        if not self._ocps:
            self.problem(1, "none", lambda: None)
        return next(iter(self._ocps.values()))

    def _build(self, horizon: int, terminal) -> tuple[Any, Any]:
        class _Given(TerminalCost):
            label = "dvp"

            def make_model(self, ocp):
                return terminal

        spec = self.cfg.ocp.model_copy(update={"horizon": horizon})
        ocp = ReachingOCP(
            self.robot,
            spec,
            np.asarray(self.cfg.task.target),
            NoTerminal() if terminal is None else _Given(),
        )
        self._ocps[horizon] = ocp
        return ocp.problem, ocp.solver

    def _set_task(self, problem_key: int, theta: np.ndarray) -> None:
        if len(theta):
            self._ocps[problem_key].set_target(theta)

    def init_controls(self, x0: np.ndarray, horizon: int) -> list[np.ndarray]:
        return [self.robot.gravity_torques(x0[: self.robot.nq])] * horizon

    def goal_state(self) -> np.ndarray | None:
        return None  # a whole IK manifold (redundant arm), not one known state

    def goal_anchors(self, rows: np.ndarray, n: int) -> np.ndarray | None:
        """At rest with the EE on the target the running cost is 0 forever (module doc), so
        V = 0 and, V >= 0 being at its minimum, dV/dx = 0: anchors on that manifold, one IK
        solution from each problem's start configuration (towards its own target when
        conditioned), repeated to ``n``. They pin the constant that DVP leaves free (see
        :meth:`System.goal_state`); they do not make V precise to the 1e-4 a short horizon
        needs to settle within a millimetre (10 ms task: still ~3e-3 at the goal)."""
        nq = self.robot.nq
        target = np.asarray(self.cfg.task.target, float)
        found = []
        for row in rows[:n]:
            goal = row[2 * nq :] if self.spec.conditioned else target
            q = self.robot.ik_position(goal, row[:nq])
            if q is not None:
                found.append(np.concatenate([q, np.zeros(nq), row[2 * nq :]]))
        if not found:
            return None
        return np.array([found[i % len(found)] for i in range(n)])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        nq = self.robot.nq
        origin, radius = self.robot.reach()
        rows: list[np.ndarray] = []
        while len(rows) < n:
            q = rng.uniform(self.q_lo, self.q_hi)
            v = rng.uniform(-self.spec.v_spread, self.spec.v_spread, nq)
            row = [q, v]
            if self.spec.conditioned:
                target = rng.uniform(self.target_lo, self.target_hi)
                far = np.linalg.norm(self.robot.ee_position_world(q) - target)
                if (
                    np.linalg.norm(target - origin) > 0.9 * radius
                    or far < self.spec.min_target_distance
                ):
                    continue
                row.append(target)
            rows.append(np.concatenate(row))
        return np.array(rows)

    def check_goal_cost(self) -> float:
        """Running cost at rest at the target after a long reach: must vanish (module doc)."""
        x0 = np.concatenate([self.cfg.robot.q0, np.zeros(self.robot.nq)])
        problem, solver = self.problem(200, "none", lambda: ZeroTerminal(self.state, self.nu))
        problem.x0 = x0
        solver.solve([x0] * 201, self.init_controls(x0, 200), 300, False)
        return float(problem.runningDatas[-1].cost / self.dt)
