"""``vmpc bench swap`` smoke test with a tiny budget: both wallclock runs happen, every swap is
accepted, the table and bench_swap.json agree."""

from __future__ import annotations

import json


def test_bench_swap_runs_both_sides_and_writes_json(cli, tmp_path):
    code, out, err = cli("bench", "swap", "--swaps", "2", "--period", "0.1", "--out", str(tmp_path))
    assert code == 0, err
    data = json.loads((tmp_path / "bench_swap.json").read_text())
    assert data["without"]["swaps_requested"] == 0
    assert data["with_swaps"]["swaps_requested"] == data["with_swaps"]["swaps_accepted"] == 2
    assert data["worker"] == "process" and "prepared in a process" in out
    for side in ("without", "with_swaps"):
        run = data[side]
        assert 0 < run["median_window_max_gap_ms"] <= run["max_gap_ms"] <= run["max_gap_run_ms"]
        assert 0 < run["p50_gap_ms"] <= run["max_gap_run_ms"]
    extra = data["with_swaps"]["max_gap_ms"] - data["without"]["max_gap_ms"]
    assert abs(data["extra_gap_ms"] - extra) < 1e-9
    assert f"{extra:+.2f} ms" in out and data["meets_goal"] == (extra <= 1.0)
