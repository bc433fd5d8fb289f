"""The closed loop: PyBullet plant, MPC controller, disturbances, logging, timing modes.

``lockstep`` (deterministic): each replan is applied at the tick it was computed for; its wall
time is measured and a deadline miss is counted when it exceeds the replan period.
``wallclock``: the loop is paced to real time and a plan that took L sim steps of wall time to
compute becomes active L steps late; the previous feedback law runs meanwhile. A plan that is
already older than ``mpc.watchdog.max_plan_age_s`` (or its horizon) then is dropped, counted in
``stale_plans_skipped``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sim import Disturbances, LinkNotFound, Recorder
from sim.bullet_arm import BulletArm

from ..config import Config, TerminalKind, dump_config, parse_terminal_kind
from ..controller import MPCController, SolveStatus
from ..errors import ConfigError, SwapRefused, VmpcError
from ..io import atomic_write_text
from ..ocp import NoTerminal, PreparedTerminal, QuadraticTerminal, ReachingOCP, TerminalCost
from ..policy.warm_start import PolicyWarmStart
from ..progress import progress_bar
from ..robot_model import build_robot
from ..value.terminal import install_validated_value, prepare_value_terminal, value_bases
from .hot_swap import (
    NO_DEADLINE,
    Deadline,
    Request,
    SwapCallback,
    SwapEvent,
    TerminalSwapper,
    preload_swap_support,
)
from .run_log import RunLog
from .summary import RunResult, RunSummary, recoveries, settle_time, solve_stats
from .swap_process import SwapProcess

__all__ = ["ClosedLoop", "builtin_terminal"]

log = logging.getLogger("vmpc")


def builtin_terminal(cfg: Config, kind: TerminalKind) -> TerminalCost | None:
    """The C++ terminals by name, or None if ``kind`` is a model path."""
    if kind == "none":
        return NoTerminal()
    if kind == "quadratic":
        return QuadraticTerminal(cfg.ocp.terminal)
    return None


TickHook = Callable[["ClosedLoop", int, float], None]


def _swaps_in_process(cfg: Config) -> bool:
    """See ``value.swap_worker``; the TorchScript evaluator needs the module in this process."""
    if cfg.value.evaluator == "torchscript":
        return False
    if cfg.value.swap_worker == "auto":
        return cfg.mpc.timing == "wallclock"
    return cfg.value.swap_worker == "process"


class ClosedLoop:
    """Builds the plant, the OCP and the controller once; :meth:`run` executes the loop."""

    def __init__(
        self,
        cfg: Config,
        *,
        gui: bool = False,
        terminal: TerminalCost | None = None,
        record: Path | None = None,
    ) -> None:
        self.cfg = cfg
        urdf, self.robot = build_robot(cfg)
        seeds = np.random.SeedSequence(cfg.run.seed).generate_state(2)
        mismatch = cfg.mismatch.model_copy(update={"seed": int(seeds[0]) ^ cfg.mismatch.seed})
        try:
            self.arm = BulletArm(cfg.robot, urdf, cfg.sim, mismatch, gui=gui)
        except LinkNotFound as exc:
            raise ConfigError(cfg.source, "robot.ee_frame", str(exc)) from None
        if self.arm.joint_names != self.robot.joint_names:
            self.arm.close()
            raise ConfigError(
                cfg.source,
                "robot.urdf",
                f"joint order differs between PyBullet "
                f"{self.arm.joint_names} and Pinocchio {self.robot.joint_names}",
            )
        try:
            rand = cfg.disturbances.random.model_copy(
                update={"seed": int(seeds[1]) ^ cfg.disturbances.random.seed}
            )
            spec = cfg.disturbances.model_copy(update={"random": rand})
            self.disturbances = Disturbances.from_spec(
                spec, cfg.run.duration, self.arm.link_index, self.arm.ee_link
            )
        except LinkNotFound as exc:
            self.arm.close()
            raise ConfigError(cfg.source, "disturbances", str(exc)) from None
        self.recorder = Recorder(record, cfg.sim.record_fps) if record else None
        x0 = np.concatenate([np.asarray(cfg.robot.q0, float), np.zeros(self.robot.nq)])
        self._x_latest, self._t = x0.copy(), 0.0
        kind = cfg.ocp.terminal.kind
        initial = terminal or builtin_terminal(cfg, kind) or NoTerminal()
        self.ocp = ReachingOCP(
            self.robot,
            cfg.ocp,
            np.asarray(cfg.task.target),
            initial,
            x0=x0,
            nthreads=cfg.mpc.nthreads,
        )
        self.swapper = TerminalSwapper(
            self.ocp,
            partial(self.prepare_terminal, in_process=False),
            wait_for_worker=cfg.mpc.timing == "lockstep",
            timeout_s=cfg.value.load_timeout_s,
        )
        self.configured_terminal = str(kind)  # what a bridge "clear" swaps back to
        if terminal is None and builtin_terminal(cfg, kind) is None:
            try:  # a model path: validated now, so a bad file stops the run before it starts
                prepared = self.prepare_terminal(kind, False, x0)
            except SwapRefused as exc:
                self.close()
                raise ConfigError(cfg.source, "ocp.terminal.kind", str(exc)) from None
            self.ocp.set_terminal(prepared.terminal, prepared.model)
            self.swapper.events.append(
                SwapEvent(0.0, str(kind), prepared.model_id, True, prepared.note, False, 0.0)
            )
        self._swap_schedule = sorted(cfg.value.swaps, key=lambda s: s.t)
        self.swap_process = SwapProcess(cfg) if _swaps_in_process(cfg) else None
        if self._swap_schedule:
            self.warm_swaps()
        # In wallclock mode a plan may go live late; allow it a horizon's worth of latency.
        latency_s = cfg.ocp.horizon * cfg.ocp.dt if cfg.mpc.timing == "wallclock" else 0.0
        self.controller = MPCController(
            self.ocp, cfg.mpc, self.robot.torque_limits, cfg.sim.timestep, latency_s
        )
        if cfg.mpc.warm_start.kind == "policy":
            try:
                self.controller.set_warm_policy(self._load_warm_policy(cfg))
            except VmpcError as exc:
                self.close()
                raise ConfigError(cfg.source, "mpc.warm_start.path", str(exc)) from None
        self._show_target = gui or record is not None
        if self._show_target:
            self.arm.set_marker(np.asarray(cfg.task.target))
        self.tick_hooks: list[TickHook] = []  # called at every tick boundary, before control
        self.stop_requested = False
        self.paused = False  # wallclock only: sim time stands still, hooks keep running
        self.last_tau = np.zeros(self.robot.nq)  # [N m] last commanded torque

    def close(self) -> None:
        if hasattr(self, "swapper"):
            self.swapper.close()
        swap_process: SwapProcess | None = getattr(self, "swap_process", None)
        if swap_process is not None:
            swap_process.close()
        self.arm.close()

    def __enter__(self) -> ClosedLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target(self) -> np.ndarray:
        return self.ocp.target

    @property
    def state(self) -> np.ndarray:
        """Latest measured state [q, v] (a view: copy it to keep it)."""
        return self._x_latest

    @property
    def time(self) -> float:
        """Sim time [s] of the current tick."""
        return self._t

    def _load_warm_policy(self, cfg: Config) -> PolicyWarmStart:
        """The checked warm-start policy of ``mpc.warm_start`` (runs nothing from the file)."""
        from ..policy.artifact import load_policy_model

        assert cfg.mpc.warm_start.path is not None
        path = Path(cfg.mpc.warm_start.path)
        path = path if path.is_absolute() else cfg.base_dir / path  # relative to the config
        model = load_policy_model(path, cfg.value.allowed_dirs, value_bases(cfg))
        return PolicyWarmStart(model, self.ocp, cfg)

    def set_target(self, target: np.ndarray) -> None:
        """Move the EE target [m, world]; takes effect at the next replan (which starts from the
        warm-start policy's rollout when there is one)."""
        self.ocp.set_target(target)
        self.controller.target_changed()
        if self._show_target:
            self.arm.set_marker(target)

    # -- terminal swaps ---------------------------------------------------------------------------
    def request_terminal(
        self, spec: Request, force: bool = False, callback: SwapCallback | None = None
    ) -> None:
        """Ask for a new terminal ('none', 'quadratic' or a model path); thread-safe. It is
        prepared off the control path and goes live at a tick boundary between two solves.
        ``callback(event)`` is called from the loop thread once it is installed or refused."""
        self.swapper.request(self._t, spec, self._x_latest, force, callback)

    def _fallback_terminal(self) -> TerminalCost:
        """What a broken terminal reverts to when no earlier one is left: the C++ quadratic."""
        return QuadraticTerminal(self.cfg.ocp.terminal)

    def prepare_terminal(
        self,
        request: Request,
        force: bool,
        x: np.ndarray,
        deadline: Deadline = NO_DEADLINE,
        in_process: bool = True,
    ) -> PreparedTerminal:
        """Load, validate and build a terminal for this loop's OCP without installing it;
        raises SwapRefused with the reason (``vmpc value check`` runs exactly this). With
        ``in_process=False`` (the swapper's calls) a value file goes to the swap process when
        there is one, and only the checked weights come back to be built here."""
        try:
            kind = parse_terminal_kind(request)
        except ValueError as exc:
            raise SwapRefused(str(exc)) from None
        term = builtin_terminal(self.cfg, kind)
        if term is not None:
            return PreparedTerminal(term, term.make_model(self.ocp), str(kind), "")
        assert isinstance(kind, Path)
        if not in_process and self.swap_process is not None:
            target = self.ocp.target.copy()
            model, note = self.swap_process.prepare(kind, force, x, target, deadline)
            return install_validated_value(model, note, x, self.cfg, self.ocp)
        return prepare_value_terminal(kind, force, x, self.cfg, self.ocp, check=deadline.check)

    def warm_swaps(self, wait: bool = False) -> None:
        """Get ready for swaps now (a schedule or a bridge makes them possible): start the swap
        process (``wait``: until it is ready), or import what the thread path needs, so a
        first swap pays no start-up."""
        if self.swap_process is not None:
            self.swap_process.start(wait)
        else:
            preload_swap_support(self.cfg.value.evaluator)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> RunResult:
        cfg, arm, ctrl = self.cfg, self.arm, self.controller
        sim_dt = arm.dt
        n_steps = int(round(cfg.run.duration / sim_dt))
        every = cfg.mpc.replan_every
        period_ms = every * sim_dt * 1e3
        wallclock = cfg.mpc.timing == "wallclock"
        nq = self.robot.nq
        lg = RunLog(nq, n_steps, n_steps // every + 2)
        x, x_meas, tau = np.zeros(2 * nq), np.zeros(2 * nq), np.zeros(nq)
        frame_every = max(1, int(round(1.0 / (cfg.sim.record_fps * sim_dt))))

        arm.read_state(x[:nq], x[nq:])
        self.start_report = ctrl.start(x.copy(), 0.0)
        deadline_misses, activate_at = 0, -1
        bar = _progress(n_steps, sim_dt, progress)
        wall0 = time.perf_counter()
        k = 0
        swaps = list(self._swap_schedule)
        moves = sorted(cfg.task.target_changes, key=lambda c: c.t)
        while k < n_steps and not self.stop_requested:
            t = k * sim_dt
            self._t = t
            arm.read_state(x[:nq], x[nq:])
            x_meas[:] = x
            arm.add_measurement_noise(x_meas)
            self._x_latest[:] = x_meas
            for hook in self.tick_hooks:
                hook(self, k, t)
            if self.paused and wallclock:
                nap = time.perf_counter()
                time.sleep(0.001)
                wall0 += time.perf_counter() - nap  # pacing resumes from where it stopped
                continue
            while moves and moves[0].t <= t + 1e-12:
                self.set_target(np.asarray(moves.pop(0).target, dtype=float))
            while swaps and swaps[0].t <= t + 1e-12:
                sw = swaps.pop(0)
                self.request_terminal(sw.terminal, sw.force)
            self.swapper.poll(t)
            if self.disturbances.update(t):
                arm.set_wrenches(self.disturbances.wrenches())
            if activate_at >= 0 and k >= activate_at:
                ctrl.activate(t)  # dropped (counted) if already older than the age limit
                activate_at = -1
            if k % every == 0 and activate_at < 0:
                rep = ctrl.solve(x_meas, t)
                j = lg.replans
                lg.replan_t[j], lg.solve_ms[j], lg.iterations[j] = t, rep.solve_ms, rep.iterations
                lg.cost[j], lg.status[j] = rep.cost, int(rep.status)
                lg.replans += 1
                if rep.solve_ms > period_ms:
                    deadline_misses += 1
                if rep.status != SolveStatus.OK:
                    log.debug("t=%.3f s: solve %s", t, rep.status.name)
                # A learned terminal that went non-finite is replaced before the next solve.
                self.swapper.revert_broken(t, self._fallback_terminal)
                latency = int(rep.solve_ms * 1e-3 / sim_dt) if wallclock else 0
                if latency == 0:
                    ctrl.activate(t)
                else:
                    activate_at = k + latency
            ctrl.control(x_meas, t, tau)
            self.last_tau[:] = tau

            lg.t[k] = t
            lg.q[k], lg.v[k], lg.tau[k] = x[:nq], x[nq:], tau
            lg.target[k] = self.ocp._target
            for _, force, torque in arm.wrenches:
                lg.force[k] += force
                lg.torque[k] += torque
            lg.steps = k + 1

            arm.step(tau)
            if self.recorder is not None and k % frame_every == 0:
                self.recorder.add(arm.render())
            k += 1
            if wallclock:
                ahead = wall0 + k * sim_dt - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            if bar is not None and k % 100 == 0:
                bar.update(100)
        wall_s = time.perf_counter() - wall0
        if bar is not None:
            bar.close()
        # Same URDF, same kinematics as PyBullet (tests/test_sim_model_agreement.py), so the EE
        # track is computed once after the loop instead of queried from the sim every tick.
        for i in range(lg.steps):
            lg.ee_position[i] = self.robot.ee_position_world(lg.q[i])
        pushes = np.array(
            [[p.start, p.duration, p.link, *p.force, *p.torque] for p in self.disturbances.history],
            dtype=float,
        ).reshape(-1, 9)
        summary = self._summarise(lg, pushes, wall_s, deadline_misses)
        return RunResult(lg, summary, pushes, wall_s)

    def _summarise(
        self, lg: RunLog, pushes: np.ndarray, wall_s: float, deadline_misses: int
    ) -> RunSummary:
        cfg, c = self.cfg, self.controller.counters
        a = lg.arrays()
        err = np.linalg.norm(a["ee_position"] - a["target"], axis=1)
        tol = cfg.task.tolerance_m
        first_push = float(pushes[0, 0]) if len(pushes) else None
        x = np.hstack([a["q"], a["v"]])
        cost = self.ocp.running_cost_evaluator().integrate(x, a["tau"], a["target"], self.arm.dt)
        sim_time = lg.steps * self.arm.dt
        return RunSummary(
            ee_error_final_m=float(err[-1]) if err.size else None,
            ee_error_max_m=float(err.max()) if err.size else None,
            settle_time_s=settle_time(a["t"], err, tol, first_push),
            closed_loop_cost=cost,
            recoveries=recoveries(a["t"], err, [(float(p[0]), float(p[1])) for p in pushes], tol),
            solve_ms=solve_stats(a["solve_ms"]),
            iterations_mean=float(a["iterations"].mean()) if lg.replans else None,
            deadline_misses=deadline_misses,
            solver_failures=c.solver_failures,
            warm_start_resets=c.warm_start_resets,
            fallback_entries=c.fallback_entries,
            fallback_ticks=c.fallback_ticks,
            nonfinite_torques=c.nonfinite_torques,
            torque_saturation_steps=c.torque_saturation_steps,
            solves_skipped=c.solves_skipped,
            state_watchdog_entries=c.state_watchdog_entries,
            state_watchdog_ticks=c.state_watchdog_ticks,
            state_hold_ticks=c.state_hold_ticks,
            state_brakes=c.state_brakes,
            plan_age_brakes=c.plan_age_brakes,
            brake_ticks=c.brake_ticks,
            stale_plans_skipped=c.stale_plans_skipped,
            joint_limit_violation_ticks=c.joint_limit_violation_ticks,
            warm_start=(
                "shift"
                if self.controller.warm_policy is None
                else f"policy {self.controller.warm_policy.model_id}"
            ),
            policy_warm_starts=c.policy_warm_starts,
            policy_warm_start_failures=c.policy_warm_start_failures,
            terminal_reverts=self.swapper.reverts,
            real_time_factor=sim_time / wall_s if wall_s > 0 else math.inf,
            interrupted=self.stop_requested,
            sim_steps=lg.steps,
            replans=lg.replans,
            horizon=cfg.ocp.horizon,
            dt=cfg.ocp.dt,
            terminal=self.ocp.terminal.label,
            swaps=[e.as_dict() for e in self.swapper.events],
            timing=cfg.mpc.timing,
            replan_every=cfg.mpc.replan_every,
            robot=cfg.robot.name,
            tolerance_m=tol,
        )

    # -- outputs ----------------------------------------------------------------------------------
    def write_outputs(self, result: RunResult, out: Path, plots: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_config(self.cfg))
        atomic_write_text(
            out / "summary.json", json.dumps(result.summary.to_dict(), indent=2) + "\n"
        )
        result.log.save(out / "log.npz", result.pushes, self.robot.joint_names)
        if plots:
            from .plots import plot_run  # matplotlib: only when plots are wanted

            plot_run(
                result,
                self.robot.torque_limits,
                self.cfg.task.tolerance_m,
                self.cfg.replan_period_s * 1e3,
                out,
            )
        if self.recorder is not None:
            self.recorder.save()


def _progress(n_steps: int, sim_dt: float, enabled: bool) -> Any:
    if not enabled:
        return None
    # Counted in ticks (integers, no float drift) and displayed in sim seconds.
    return progress_bar(
        total=n_steps,
        unit="sim s",
        unit_scale=sim_dt,
        bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} sim s [{elapsed}<{remaining}]",
    )
