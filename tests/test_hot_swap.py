"""Swapping the terminal while the loop runs: accepted swaps go live at the next replan with no
tick left without a controller; every kind of bad file is refused and the old terminal runs on."""

import threading
import time

import numpy as np
import pytest

from mpc.config import load_config
from mpc.controller import SolveStatus
from mpc.errors import ConfigError
from mpc.loop import ClosedLoop

from .conftest import IIWA, local_config, make_artifact, wait_until


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Value models load from the config file's folder: this module's tests run a copy of the
    # shipped config that sits next to tmp_path/models.
    monkeypatch.setattr(f"{__name__}.IIWA", local_config(tmp_path))
    (tmp_path / "models").mkdir()
    return tmp_path


def _swap_run(swaps, duration=1.2, extra=(), after=None):
    sets = [
        f"run.duration={duration}",
        "disturbances.schedule=[]",
        "value.swaps=["
        + ", ".join(f"{{t: {t}, terminal: '{p}', force: {str(f).lower()}}}" for t, p, f in swaps)
        + "]",
        *extra,
    ]
    with ClosedLoop(load_config(IIWA, sets)) as loop:
        loop.warm_swaps(wait=True)  # a swap process's start-up is not what these tests time
        result = loop.run(progress=False)
        if after is not None:
            after(loop)
        return result, loop.ocp.terminal.label


def nan_weights(net):
    """Finite weights whose first layer computes inf - inf = NaN for any ordinary state."""
    net.in_std[:2] = 1e-10
    net.layers[0].weight[:, 0] = 1e300
    net.layers[0].weight[:, 1] = -1e300


def _no_tick_without_controller(s):
    assert s.fallback_ticks == 0 and s.nonfinite_torques == 0 and s.solver_failures == 0


def test_bad_files_are_refused_and_the_old_terminal_keeps_running(workdir):
    cfg = load_config(IIWA)
    make_artifact(workdir / "models/wrong_dim.pt", cfg, nx=12)
    make_artifact(workdir / "models/wrong_robot.pt", cfg, robot_name="panda")
    make_artifact(workdir / "models/wrong_task.pt", cfg, fingerprint="sha256:" + "0" * 64)
    trunc = make_artifact(workdir / "models/truncated.pt", cfg)
    trunc.write_bytes(trunc.read_bytes()[:4000])
    corrupt = make_artifact(workdir / "models/corrupt.pt", cfg)
    blob = bytearray(corrupt.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\xff" * 64
    corrupt.write_bytes(bytes(blob))
    make_artifact(workdir / "models/nan.pt", cfg, edit=nan_weights)
    outside = make_artifact(workdir / "elsewhere.pt", cfg)
    swaps = [
        (0.1 * (i + 1), p, False)
        for i, p in enumerate(
            [
                "models/wrong_dim.pt",
                "models/wrong_robot.pt",
                "models/wrong_task.pt",
                "models/truncated.pt",
                "models/corrupt.pt",
                "models/nan.pt",
                str(outside),
                "models/missing.pt",
            ]
        )
    ]
    result, label = _swap_run(swaps)
    s = result.summary
    reasons = [e["reason"] for e in s.swaps]
    assert [e["accepted"] for e in s.swaps] == [False] * 8, reasons
    expected = [
        "state dimension 12 != this robot's 14",
        "trained for robot 'panda'",
        "task fingerprint",
        "cannot load as TorchScript",
        "does not match the metadata",
        "not finite at the current state",
        "outside the allowed folders",
        "no such file",
    ]
    for reason, want in zip(reasons, expected, strict=True):
        assert want in reason and "\n" not in reason, reason
    assert label == "quadratic"
    _no_tick_without_controller(s)
    assert (result.log.arrays()["status"] == SolveStatus.OK).all()


def test_accepted_swap_goes_live_at_the_next_replan(workdir):
    cfg = load_config(IIWA)
    make_artifact(workdir / "models/good.pt", cfg)
    result, label = _swap_run([(0.5, "models/good.pt", False), (0.9, "none", False)])
    s = result.summary
    (a, b) = s.swaps
    assert (
        a["accepted"]
        and a["applied_t"] == pytest.approx(0.5)
        and a["model_id"].startswith("good.pt@")
    )
    assert b["accepted"] and b["applied_t"] == pytest.approx(0.9) and label == "none"
    _no_tick_without_controller(s)
    # The replan at the swap tick already solved with the new terminal: its cost changed.
    log = result.log.arrays()
    k = int(np.argmin(np.abs(log["replan_t"] - 0.5)))
    jump = abs(log["cost"][k] - log["cost"][k - 1])
    typical = np.abs(np.diff(log["cost"][k - 50 : k - 1])).max()
    assert jump > 10 * typical


def test_fingerprint_mismatch_is_accepted_only_when_forced(workdir):
    cfg = load_config(IIWA)
    make_artifact(workdir / "models/other_task.pt", cfg, fingerprint="sha256:" + "1" * 64)
    result, label = _swap_run(
        [(0.2, "models/other_task.pt", False), (0.4, "models/other_task.pt", True)],
        duration=0.6,
        extra=["value.swap_worker=process"],  # the refusal and the note cross the process
    )
    refused, forced = result.summary.swaps
    assert not refused["accepted"] and "use force" in refused["reason"]
    assert forced["accepted"] and forced["forced"] and forced["reason"].startswith("forced:")
    assert label.startswith("other_task.pt@")


def test_terminal_path_on_the_command_line_is_validated_before_the_run(workdir):
    cfg_bad = load_config(IIWA, ["ocp.terminal.kind=models/missing.pt"])
    with pytest.raises(ConfigError, match="ocp.terminal.kind: models/missing.pt: no such file"):
        ClosedLoop(cfg_bad)
    make_artifact(workdir / "models/good.pt", load_config(IIWA))
    with ClosedLoop(
        load_config(IIWA, ["ocp.terminal.kind=models/good.pt", "run.duration=0.05"])
    ) as loop:
        assert loop.ocp.terminal.label.startswith("good.pt@")
        assert loop.run(progress=False).summary.swaps[0]["accepted"]


@pytest.mark.serial  # tick gaps in wallclock: no neighbouring test
def test_wallclock_swap_from_another_thread_never_stalls_the_loop(workdir):
    """The swap is requested from a client thread while the loop runs in real time; loading and
    checking the file happen off the control path, so no tick waits for them."""
    cfg = load_config(
        IIWA, ["run.duration=1.0", "mpc.timing=wallclock", "disturbances.schedule=[]"]
    )
    make_artifact(workdir / "models/good.pt", cfg)
    events = []
    tick_wall = []
    with ClosedLoop(cfg) as loop:
        assert loop.swap_process is not None  # wallclock: loads run in another process
        loop.warm_swaps(wait=True)
        loop.tick_hooks.append(lambda _loop, k, t: tick_wall.append(time.perf_counter()))

        def client():
            wait_until(lambda: loop.time >= 0.3, timeout=30, what="the loop to reach t = 0.3 s")
            loop.request_terminal("models/good.pt", callback=events.append)

        th = threading.Thread(target=client)
        th.start()
        result = loop.run(progress=False)
        th.join()
    assert len(events) == 1 and events[0].accepted, events
    assert events[0].t >= 0.3 and events[0].applied_t is not None
    assert events[0].applied_t >= events[0].t
    _no_tick_without_controller(result.summary)
    assert result.summary.real_time_factor <= 1.01  # paced to real time
    # Never stalled: a first load on the control path takes 0.3-1.5 s (torch import, TorchScript
    # compile); ticks are 1 ms apart, and 200 ms leaves room for a busy machine's scheduling.
    gaps = np.diff(tick_wall)
    assert gaps.max() < 0.2, f"a tick waited {gaps.max() * 1e3:.1f} ms"


@pytest.mark.parametrize("timing", ["lockstep", "wallclock"])
def test_a_swap_slower_than_the_load_timeout_is_refused(workdir, timing):
    """6000 validation states take ~0.7 s to check; with a 50 ms timeout the swap is refused,
    the old terminal runs on, and the worker gives up instead of finishing the check."""
    cfg = load_config(IIWA)
    make_artifact(workdir / "models/good.pt", cfg)
    extra = ["value.validation_states=6000", f"mpc.timing={timing}"]
    t0 = time.monotonic()
    killed = []
    result, label = _swap_run(
        [(0.1, "models/good.pt", False)],
        duration=0.3,
        extra=[*extra, "value.load_timeout_s=0.05"],
        after=lambda loop: killed.append(loop.swap_process and loop.swap_process.restarts),
    )
    refused_s = time.monotonic() - t0
    (event,) = result.summary.swaps
    assert not event["accepted"] and "value.load_timeout_s" in event["reason"], event
    assert label == "quadratic"
    _no_tick_without_controller(result.summary)
    if timing == "wallclock":  # the swap process: killed at the timeout
        assert killed == [1]
    if timing == "lockstep":
        # The same run given time to finish: closing the loop joins the worker, so the refused
        # run took less only if the worker gave up at a checkpoint.
        t0 = time.monotonic()
        result, label = _swap_run([(0.1, "models/good.pt", False)], duration=0.3, extra=extra)
        full_s = time.monotonic() - t0
        assert result.summary.swaps[0]["accepted"] and label.startswith("good.pt@")
        assert refused_s < 0.6 * full_s, (refused_s, full_s)


def test_the_gil_switch_interval_is_restored_after_a_swap(workdir):
    import sys

    before = sys.getswitchinterval()
    make_artifact(workdir / "models/good.pt", load_config(IIWA))
    result, _ = _swap_run([(0.1, "models/good.pt", False)], duration=0.2)
    assert result.summary.swaps[0]["accepted"]
    assert sys.getswitchinterval() == before


def test_swap_process_is_killed_at_the_timeout_and_the_next_swap_gets_a_fresh_one(workdir):
    from mpc.errors import SwapRefused
    from mpc.loop.hot_swap import Deadline
    from mpc.loop.swap_process import SwapProcess

    cfg = load_config(IIWA, ["value.validation_states=6000"])
    make_artifact(workdir / "models/good.pt", cfg)
    x = np.concatenate([cfg.robot.q0, np.zeros(7)])
    target = np.asarray(cfg.task.target)
    proc = SwapProcess(cfg)
    try:
        proc.start(wait=True)
        with pytest.raises(SwapRefused, match="value.load_timeout_s"):
            proc.prepare(workdir / "models/good.pt", False, x, target, Deadline(0.05, "good"))
        assert proc.restarts == 1
        model, note = proc.prepare(workdir / "models/good.pt", False, x, target, Deadline(60, "g"))
        assert model.model_id.startswith("good.pt@") and note == ""
        assert model.arrays and all(a.dtype == np.float64 for a in model.arrays.values())
        with pytest.raises(SwapRefused, match="no such file"):
            proc.prepare(workdir / "models/missing.pt", False, x, target, Deadline(60, "m"))
    finally:
        proc.close()
