"""Controller watchdogs on a real ClosedLoop: bad measured states (hold, then brake, then
recovery), plan age (brake, wallclock stale-plan skip), joint-limit counting, and that the default
demo's closed loop is unchanged by them."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.config import load_config
from mpc.controller import SolveStatus
from mpc.loop import ClosedLoop

from .conftest import IIWA, slow_solves

NO_PUSH = "disturbances.schedule=[]"


class Corrupt:
    """Overwrites the measured state (after the sensor noise) on ticks [start, stop)."""

    def __init__(self, arm, start: int, stop: int, write) -> None:
        self.arm, self.start, self.stop, self.write = arm, start, stop, write
        self._orig, self.k = arm.add_measurement_noise, 0

    def __call__(self, x: np.ndarray) -> None:
        self._orig(x)
        if self.start <= self.k < self.stop:
            self.write(x)
        self.k += 1


def run(extra=(), duration=0.6, corrupt=None, setup=None):
    """A lockstep run; returns (result, torques sent, true EE track, loop limits)."""
    cfg = load_config(IIWA, [f"run.duration={duration}", NO_PUSH, *extra])
    with ClosedLoop(cfg) as loop:
        sent = []
        step = loop.arm.step

        def spy(tau):
            sent.append(tau.copy())
            step(tau)

        loop.arm.step = spy
        if corrupt is not None:
            start, stop, write = corrupt
            loop.arm.add_measurement_noise = Corrupt(loop.arm, start, stop, write)
        if setup is not None:
            setup(loop)
        result = loop.run(progress=False)
        ctrl = loop.controller
    return result, np.array(sent), ctrl


def _nan(x):
    x[:] = np.nan


def _inf_v(x):
    x[9] = np.inf


def _q_out_of_range(x):
    x[1] = 4.0  # joint 2: limit 2.09 rad


def test_short_nan_window_holds_last_torque_then_recovers():
    result, sent, ctrl = run(corrupt=(300, 310, _nan))
    s = result.summary
    assert np.isfinite(sent).all()
    assert s.state_watchdog_entries == 1 and s.state_watchdog_ticks == 10
    assert s.state_hold_ticks == 10 and s.state_brakes == 0 and s.brake_ticks == 0
    assert s.solves_skipped == 10 and s.solver_failures == 0
    np.testing.assert_array_equal(sent[300:310], np.repeat(sent[299:300], 10, axis=0))
    status = result.log.arrays()["status"]
    assert set(status[300:310]) == {SolveStatus.SKIPPED} and status[310] == SolveStatus.OK
    assert s.ee_error_final_m is not None and s.ee_error_final_m < 0.02  # still reaching


@pytest.mark.parametrize("write", [_nan, _inf_v], ids=["nan", "inf_v"])
def test_long_bad_window_brakes_with_gravity_compensation_and_recovers(write):
    hold = 0.02
    result, sent, ctrl = run(duration=1.0, corrupt=(300, 500, write))
    s = result.summary
    limits = ctrl.tau_limit
    assert np.isfinite(sent).all() and np.all(np.abs(sent) <= limits)
    assert s.state_watchdog_entries == 1 and s.state_watchdog_ticks == 200
    assert s.state_hold_ticks == round(hold / 1e-3) and s.state_brakes == 1
    assert s.brake_ticks == 200 - s.state_hold_ticks  # a fresh plan is active at once after
    assert s.solves_skipped == 200 and s.solver_failures == 0
    # The brake: gravity compensation at the last good q (no damping on a bad v).
    a = result.log.arrays()
    g = ctrl.ocp.robot.gravity_torques(a["q"][299])
    if write is _nan:
        np.testing.assert_allclose(sent[320:500], np.repeat(g[None], 180, axis=0), atol=1e-9)
    # The arm does not fall: the EE drops little, and velocities are damped out in the window.
    z = a["ee_position"][:, 2]
    assert z[300] - z[300:500].min() < 0.05
    # Recovery: the law takes over again and the arm reaches the target.
    status = a["status"]
    assert status[500] == SolveStatus.OK
    assert not np.array_equal(sent[510], sent[499])
    assert s.ee_error_final_m is not None and s.ee_error_final_m < 0.02


def test_out_of_range_position_brakes_with_damping():
    result, sent, ctrl = run(duration=0.5, corrupt=(200, 300, _q_out_of_range))
    s = result.summary
    assert s.state_watchdog_ticks == 100 and s.state_brakes == 1
    assert s.joint_limit_violation_ticks == 0  # counted on good states only
    a = result.log.arrays()
    # q is bad (last good q used), v is measured and damped.
    k = 250
    g = ctrl.ocp.robot.gravity_torques(a["q"][199])
    expected = np.clip(g - ctrl.brake_damping * a["v"][k], -ctrl.tau_limit, ctrl.tau_limit)
    np.testing.assert_allclose(sent[k], expected, atol=1e-9)
    # Damping toward rest: the speed at the end of the window is far below its start.
    speed = np.linalg.norm(a["v"], axis=1)
    assert speed[299] < 0.5 * speed[220]


def _fail_solves(first: int, last: int):
    """Every replan from index first to last (inclusive, the cold start is index 0) fails."""

    def setup(loop):
        ctrl = loop.controller
        orig = ctrl._read_solution
        calls = [0]

        def read():
            ok = orig()
            calls[0] += 1
            return ok and not (first <= calls[0] - 1 <= last)

        ctrl._read_solution = read

    return setup


def test_old_plan_hands_over_to_the_brake():
    extra = ["mpc.failure.fallback_after=100000", "mpc.failure.reset_after=100000"]
    result, sent, ctrl = run(extra, duration=0.8, setup=_fail_solves(201, 400))
    s = result.summary
    assert ctrl.max_plan_age == pytest.approx(0.1)
    assert ctrl.k_rows * ctrl.dt >= ctrl.max_plan_age  # the law never holds a stale knot
    assert s.solver_failures == 200 and s.fallback_entries == 0
    assert s.plan_age_brakes == 1
    assert s.brake_ticks == 200 - 100  # failures at ticks 200..399; plan of tick 199 ages out
    assert np.isfinite(sent).all()
    assert s.ee_error_final_m is not None and s.ee_error_final_m < 0.05


def test_tiny_plan_age_brakes_between_replans():
    extra = ["mpc.replan_every=10", "mpc.watchdog.max_plan_age_s=0.004"]
    result, sent, ctrl = run(extra, duration=0.1)
    s = result.summary
    assert s.plan_age_brakes == s.replans  # once per replan period
    assert s.brake_ticks == 5 * s.replans  # ages 5..9 ms of each 10 ms period


def test_wallclock_plan_too_old_to_go_live_is_skipped():
    """A solve that takes 8 ms of wall time produces a plan 8 ms old when it would go live: with
    a 5 ms age limit it is dropped, and the brake holds the arm meanwhile."""
    cfg = load_config(
        IIWA,
        ["run.duration=0.06", "mpc.timing=wallclock", "mpc.watchdog.max_plan_age_s=0.005", NO_PUSH],
    )
    with ClosedLoop(cfg) as loop:
        slow_solves(loop, 0.008)
        result = loop.run(progress=False)
    s = result.summary
    assert s.replans >= 2
    assert s.stale_plans_skipped >= s.replans - 1  # the last may still be in flight
    assert s.plan_age_brakes >= 1 and s.brake_ticks > 0


def test_joint_limit_ticks_are_counted():
    cfg = load_config(IIWA, ["run.duration=0.01"])
    with ClosedLoop(cfg) as loop:
        ctrl, rb = loop.controller, loop.robot
        x = np.concatenate([cfg.robot.q0, np.zeros(7)])
        ctrl.start(x)
        tau = np.zeros(7)
        ctrl.control(x, 0.0, tau)
        assert ctrl.counters.joint_limit_violation_ticks == 0
        x[1] = rb.q_upper[1] + 0.05  # beyond the limit, within the watchdog's margin
        ctrl.control(x, 0.001, tau)
        x[1], x[7 + 5] = cfg.robot.q0[1], 1.5 * rb.v_limit[5]
        ctrl.control(x, 0.002, tau)
        c = ctrl.counters
        assert c.joint_limit_violation_ticks == 2 and c.state_watchdog_ticks == 0
        x[7 + 5] = 1e6  # absurd: the watchdog, not the limit counter
        ctrl.control(x, 0.003, tau)
        assert c.joint_limit_violation_ticks == 2 and c.state_watchdog_ticks == 1
        assert np.isfinite(tau).all()


@pytest.mark.slow
def test_default_demo_cost_is_unchanged():
    cfg = load_config(IIWA)
    with ClosedLoop(cfg) as loop:
        s = loop.run(progress=False).summary
    assert s.closed_loop_cost == 0.7720854930281075
    assert s.state_watchdog_ticks == s.brake_ticks == s.stale_plans_skipped == 0
