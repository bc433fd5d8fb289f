"""Metric definitions of summary.json on hand-made signals."""

from dataclasses import asdict

import numpy as np
import pytest

from mpc.loop.summary import recoveries, settle_time, solve_stats

T = np.arange(0, 3.0, 0.001)


def test_settle_time_is_last_exit_from_tolerance_before_first_push():
    err = np.where(T < 0.8, 0.1, 0.001)
    err[(T > 1.5) & (T < 1.6)] = 0.05  # a push later must not move the settle time
    assert settle_time(T, err, 0.005, until=1.5) == np.float64(T[800])


def test_settle_time_none_when_never_within():
    assert settle_time(T, np.full_like(T, 0.1), 0.005, None) is None


def test_recovery_measured_from_push_start_until_back_for_good():
    err = np.full_like(T, 0.001)
    err[(T >= 1.0) & (T < 1.4)] = 0.08
    err[(T >= 1.5) & (T < 1.55)] = 0.006  # a brief excursion extends the recovery
    (r,) = recoveries(T, err, [(1.0, 0.1)], 0.005)
    assert r.start_s == 1.0 and r.duration_s == 0.1
    assert r.peak_deviation_m == 0.08
    assert r.recovery_time_s == pytest.approx(0.55, abs=1e-9)


def test_each_push_gets_its_own_window():
    err = np.full_like(T, 0.001)
    err[(T >= 1.0) & (T < 1.2)] = 0.05
    err[(T >= 2.0) & (T < 2.5)] = 0.02
    r1, r2 = recoveries(T, err, [(1.0, 0.1), (2.0, 0.1)], 0.005)
    assert r1.recovery_time_s == pytest.approx(0.2, abs=1e-9) and r1.peak_deviation_m == 0.05
    assert r2.recovery_time_s == pytest.approx(0.5, abs=1e-9) and r2.peak_deviation_m == 0.02


def test_solve_stats():
    s = solve_stats(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s.mean == 2.5 and s.max == 4.0 and s.p50 == 2.5
    assert s.p99 == pytest.approx(3.97)  # numpy's linear interpolation between 3 and 4
    assert all(np.isnan(v) for v in asdict(solve_stats(np.array([]))).values())


def test_recovery_of_a_push_after_the_end_is_undefined():
    (r,) = recoveries(T, np.full_like(T, 0.001), [(5.0, 0.1)], 0.005)
    assert r.peak_deviation_m is None and r.recovery_time_s is None


def test_recovery_that_never_comes_back_is_none():
    err = np.full_like(T, 0.001)
    err[T >= 2.0] = 0.05
    (r,) = recoveries(T, err, [(2.0, 0.1)], 0.005)
    assert r.peak_deviation_m == 0.05 and r.recovery_time_s is None


def test_push_at_time_zero_leaves_settle_time_undefined():
    assert settle_time(T, np.full_like(T, 0.001), 0.005, until=0.0) is None
