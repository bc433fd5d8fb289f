"""Controller safety: NaN in the plan, persistent failures, torque limits, warm-start shift."""

import numpy as np
import pytest

from mpc.config import load_config
from mpc.controller import SolveStatus
from mpc.loop import ClosedLoop

from .conftest import IIWA


class NaNInjector:
    """Corrupts the plan Crocoddyl hands back on chosen replans (by replan index)."""

    def __init__(self, controller, bad: set[int]) -> None:
        self.controller, self.bad, self.calls = controller, bad, 0
        self._orig = controller._read_solution

    def __call__(self) -> bool:
        ok = self._orig()
        if self.calls in self.bad:
            self.controller._Uc[0, 3] = np.nan
            ok = np.isfinite(self.controller._bufs[1]).all()
        self.calls += 1
        return bool(ok)


def run_with_nans(bad: set[int], duration: float = 1.0, extra=()):
    cfg = load_config(IIWA, [f"run.duration={duration}", "disturbances.schedule=[]", *extra])
    with ClosedLoop(cfg) as loop:
        ctrl = loop.controller
        sent = []
        orig_step = loop.arm.step

        def spy(tau):
            sent.append(tau.copy())
            orig_step(tau)

        loop.arm.step = spy
        ctrl._read_solution = NaNInjector(ctrl, {i + 1 for i in bad})  # +1: the cold start
        result = loop.run(progress=False)
    return result, np.array(sent), ctrl


def test_single_nan_keeps_previous_law_and_never_sends_nan():
    result, sent, ctrl = run_with_nans({100, 101})
    assert np.isfinite(sent).all()
    assert result.summary.solver_failures == 2
    assert result.summary.warm_start_resets == 0
    assert result.summary.fallback_entries == 0
    status = result.log.arrays()["status"]
    assert list(status[100:102]) == [SolveStatus.FAILED, SolveStatus.FAILED]
    assert status[102] == SolveStatus.OK
    # The held law is smooth: no torque jump beyond what neighbouring ticks show.
    jumps = np.abs(np.diff(sent[95:110], axis=0)).max()
    assert jumps < 5.0


def test_consecutive_failures_reset_warm_start_then_fall_back():
    bad = set(range(200, 230))  # 30 failures in a row: resets every 3, fallback after 20
    result, sent, ctrl = run_with_nans(bad)
    s = result.summary
    assert np.isfinite(sent).all()
    assert s.solver_failures == 30
    assert s.warm_start_resets == 10
    assert s.fallback_entries == 1
    assert s.fallback_ticks == 11  # failures 20..30 each hand one tick to the fallback
    status = result.log.arrays()["status"]
    assert status[219] == SolveStatus.FALLBACK and status[230] == SolveStatus.OK
    assert not ctrl.in_fallback  # recovered after the first good solve
    # And the arm still gets to the target.
    assert s.ee_error_final_m < 0.02


def test_fallback_is_gravity_compensation_with_damping():
    cfg = load_config(IIWA, ["run.duration=0.01"])
    with ClosedLoop(cfg) as loop:
        ctrl, robot = loop.controller, loop.robot
        ctrl.in_fallback = True
        q, v = np.asarray(cfg.robot.q0), np.full(robot.nq, 0.1)
        tau = np.zeros(robot.nq)
        ctrl.control(np.concatenate([q, v]), 0.0, tau)
        # The configured damping, capped per joint for stability at the sim rate (joint 7).
        d = ctrl.fallback_damping
        assert np.all(d <= cfg.mpc.failure.fallback_damping) and d[0] == 5.0 and d[6] < 1.0
        expected = robot.gravity_torques(q) - d * v
        np.testing.assert_allclose(
            tau, np.clip(expected, -robot.torque_limits, robot.torque_limits)
        )


def test_torques_are_clamped_and_counted():
    cfg = load_config(IIWA, ["run.duration=0.01"])
    with ClosedLoop(cfg) as loop:
        ctrl = loop.controller
        x = np.concatenate([cfg.robot.q0, np.zeros(7)])
        ctrl.start(x)
        ctrl.U[:] = 1e4
        tau = np.zeros(7)
        assert ctrl.control(x, 0.0, tau)
        np.testing.assert_array_equal(tau, loop.robot.torque_limits)
        assert ctrl.counters.torque_saturation_steps == 1


def test_nonfinite_torque_is_never_sent():
    cfg = load_config(IIWA, ["run.duration=0.01"])
    with ClosedLoop(cfg) as loop:
        ctrl = loop.controller
        x = np.concatenate([cfg.robot.q0, np.zeros(7)])
        ctrl.start(x)
        ctrl.K[0, 0, 0] = np.inf
        tau = np.zeros(7)
        ctrl.control(x + 0.01, 0.0, tau)
        assert np.isfinite(tau).all()
        assert ctrl.counters.nonfinite_torques == 1


def test_feedback_law_sign_and_interpolation():
    """u = U[i] - K[i] (x - x_ref(t)) with x_ref interpolated along the plan."""
    cfg = load_config(IIWA, ["run.duration=0.01", "ocp.torque_bounds=false"])
    with ClosedLoop(cfg) as loop:
        ctrl = loop.controller
        x = np.concatenate([cfg.robot.q0, np.zeros(7)])
        ctrl.start(x)
        t = 0.3 * ctrl.dt
        xref = ctrl.X[0] + 0.3 * (ctrl.X[1] - ctrl.X[0])
        dx = np.linspace(-0.01, 0.01, 14)
        tau = np.zeros(7)
        ctrl.control(xref + dx, t, tau)
        np.testing.assert_allclose(tau, ctrl.U[0] - ctrl.K[0] @ dx, atol=1e-9)


@pytest.mark.parametrize("every", [1, 60])
def test_warm_start_shifts_by_whole_knots(every):
    cfg = load_config(IIWA, ["run.duration=0.01", f"mpc.replan_every={every}"])
    with ClosedLoop(cfg) as loop:
        ctrl = loop.controller
        x = np.concatenate([cfg.robot.q0, np.zeros(7)])
        ctrl.start(x)
        xs = [np.array(v) for v in ctrl._warm_xs]
        t = every * 1e-3
        wx, _ = ctrl._warm_start(t)
        m = int(round(t / ctrl.dt))
        for k in range(ctrl.T + 1):
            np.testing.assert_array_equal(wx[k], xs[min(k + m, ctrl.T)])
