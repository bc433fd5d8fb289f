"""A learned terminal that goes non-finite while the loop runs is swapped back automatically:
to the terminal it replaced, or to the C++ quadratic when it was the configured one. The revert
is counted in summary.json and listed among the swaps, and no torque is ever non-finite."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.config import load_config
from mpc.loop import ClosedLoop

from .conftest import IIWA, local_config, make_artifact

BREAK_AT_S = 0.2  # [s] sim time at which the value's weights go bad


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Value models load from the config file's folder: this module's tests run a copy of the
    # shipped config that sits next to tmp_path/models.
    monkeypatch.setattr(f"{__name__}.IIWA", local_config(tmp_path))
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/v.pt", load_config(IIWA))
    return tmp_path


def _break_the_value_at(t_break: float):
    """A tick hook that poisons the live learned terminal's output layer once (a model that is
    finite when validated and non-finite later, e.g. after memory corruption)."""
    done = []

    def hook(loop: ClosedLoop, _k: int, t: float) -> None:
        evaluators = getattr(loop.ocp.terminal, "_evaluators", [])
        if done or t < t_break or not evaluators:
            return
        for ev in evaluators:
            ev.wo_aug[:] = np.nan
            ev.invalidate()
        done.append(t)

    return hook, done


def _run(sets: list[str]) -> tuple[ClosedLoop, object, list[float]]:
    cfg = load_config(IIWA, ["run.duration=0.5", "disturbances.schedule=[]", *sets])
    with ClosedLoop(cfg) as loop:
        hook, done = _break_the_value_at(BREAK_AT_S)
        loop.tick_hooks.append(hook)
        result = loop.run(progress=False)
        return loop, result, done


def test_configured_value_reverts_to_the_quadratic(workdir):
    loop, result, done = _run(["ocp.terminal.kind=models/v.pt"])
    s = result.summary
    assert done, "the value was never poisoned"
    assert s.terminal_reverts == 1 and s.terminal == "quadratic"
    revert = s.swaps[-1]
    assert revert["spec"] == "revert" and revert["accepted"] and "non-finite" in revert["reason"]
    assert BREAK_AT_S <= revert["t"] <= BREAK_AT_S + 0.01  # at the next replan
    assert s.nonfinite_torques == 0 and np.isfinite(result.log.arrays()["tau"]).all()
    assert s.to_dict()["terminal_reverts"] == 1


def test_swapped_in_value_reverts_to_the_terminal_it_replaced(workdir):
    loop, result, _ = _run(
        ["ocp.terminal.kind=none", "value.swaps=[{t: 0.05, terminal: models/v.pt}]"]
    )
    s = result.summary
    assert [e["spec"] for e in s.swaps] == ["models/v.pt", "revert"]
    assert s.terminal_reverts == 1 and s.terminal == "none"
    assert s.nonfinite_torques == 0


def test_a_healthy_value_is_never_reverted(workdir):
    cfg = load_config(IIWA, ["run.duration=0.3", "ocp.terminal.kind=models/v.pt"])
    with ClosedLoop(cfg) as loop:
        s = loop.run(progress=False).summary
    assert s.terminal_reverts == 0 and s.terminal.startswith("v.pt@")
