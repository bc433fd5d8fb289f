"""``vmpc bench soak``: a real ``vmpc sim --bridge`` process under pushes, a wrench stream, swaps
and a fuzzer. The smoke test (5 s) runs in the normal suite; the 60 s version is ``-m soak``
(``make test-soak``)."""

from __future__ import annotations

import json

import pytest

from .conftest import IIWA, ROOT


def _check_run(data: dict, duration: float) -> None:
    """What every soak must show, whatever its length."""
    assert not data["crashed"] and data["exit_code"] == 0, data["crash_reason"]
    s = data["summary"]
    assert s is not None and s["sim_steps"] == round(duration * 1000) and not s["interrupted"]
    assert s["nonfinite_torques"] == data["nonfinite_torques"] == 0
    assert s["timing"] == "wallclock"
    c, f = data["clients"], data["fuzz"]
    assert c["errors"] == []
    assert c["states_seen"] > 0 and c["states_nonfinite"] == 0
    assert c["pushes_sent"] > 0 and c["pushes_accepted"] > 0
    assert c["wrench_samples"] > 20 * (duration - 3)
    assert c["swaps_requested"] >= 2 and c["swap_timeouts"] == 0
    # The swaps to the model, not only those back to the quadratic, must go through.
    assert c["value_swaps_requested"] >= 1 and c["value_swaps_accepted"] >= 1, c["swap_refusals"]
    # The fuzzer sent many kinds of garbage; the server answered most, applied none of it,
    # counted it as bad, failed on none of it and still answered a status request afterwards.
    assert f["sent"] >= 100 and len(f["by_kind"]) >= 15
    assert f["replies"] > 0.5 * f["sent"] and f["error_replies"] > 0
    assert f["applied"] == 0, f["applied_by_kind"]
    assert f["undecodable_replies"] == 0
    assert f["alive_after"]
    b = s["bridge"]
    assert b["bad"] > 0 and b["internal_errors"] == data["bridge_internal_errors"] == 0
    samples = data["rss_samples"]
    assert len(samples) >= 3
    assert all(x["rss_mb"] > 50 and x["fds"] > 0 for x in samples)
    assert [x["wall_s"] for x in samples] == sorted(x["wall_s"] for x in samples)
    assert data["rss_mb"]["start"] == samples[0]["rss_mb"]
    assert data["rss_mb"]["net_growth"] <= data["rss_mb"]["goal_net_growth"]


def test_bench_soak_smoke(cli, tmp_path):
    code, out, err = cli(
        "bench", "soak", "--duration", "3.5", "--swap-period", "1", "--out", str(tmp_path)
    )
    assert code == 0, err
    data = json.loads((tmp_path / "bench_soak.json").read_text())
    _check_run(data, 3.5)
    assert (tmp_path / "soak_rss.png").stat().st_size > 0
    assert (tmp_path / "soak-run" / "summary.json").exists()
    assert "the goal: no crash" in out and "0 APPLIED" in out and "bridge up at" in err


@pytest.mark.soak
def test_bench_soak_60s(tmp_path, monkeypatch):
    from vmpc.benches.soak import bench_soak

    monkeypatch.chdir(ROOT)  # the swapped model's path is relative, as a user would give it
    r = bench_soak(str(IIWA), 60.0, out=tmp_path)
    data = json.loads(r.json_path.read_text())
    _check_run(data, 60.0)
    assert r.clients.swaps_accepted >= 0.9 * r.clients.swaps_requested
    assert r.net_growth_second_half_mb is not None and r.net_growth_second_half_mb < 20
    assert r.meets_goal  # every goal, the bridge's internal errors included
