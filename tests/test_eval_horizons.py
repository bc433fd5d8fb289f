"""``vmpc eval horizons``: the study in-process with tiny budgets, one subprocess smoke test of
the command (with a worker pool), and the pure parts (configs, aggregation, episodes)."""

import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mpc.config import load_config
from mpc.errors import ConfigError, VmpcError
from mpc.robot_model import build_robot
from vmpc.cli import main
from vmpc.studies.horizons import (
    ControllerSpec,
    Episode,
    PushSetup,
    RunRow,
    StudySettings,
    aggregate,
    draw_episodes,
    parse_controllers,
    replay_overrides,
    run_config,
)
from vmpc.studies.horizons.running import _yaml_float

from .conftest import IIWA, local_config, make_artifact

# Trajectories are lockstep-deterministic; solve times are not, so only these are compared.
DETERMINISTIC = (
    "closed_loop_cost",
    "cost_ratio",
    "ee_error_final_m",
    "ee_error_max_m",
    "settle_time_s",
    "recovery_time_s",
    "peak_deviation_m",
    "replans",
    "solver_failures",
    "fallback_entries",
)


def _study_args(out, workers, config=IIWA):
    return [
        "eval",
        "horizons",
        "--config",
        str(config),
        "--value",
        "models/v.pt",
        "--starts",
        "2",
        "--duration",
        "0.2",
        "--controllers",
        "T10-learned",
        "T10-quadratic",
        "T20-quadratic",
        "--workers",
        str(workers),
        "--out",
        out,
        "-q",
    ]


def test_study_end_to_end_and_workers_agree(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/v.pt", load_config(IIWA))
    monkeypatch.chdir(tmp_path)
    here = local_config(tmp_path)
    assert main(_study_args("one", 1, here)) == 0
    stdout = capsys.readouterr().out
    assert "without push" in stdout and "with push" in stdout
    assert "T10-learned" in stdout and "speed-up" in stdout
    for name in ("horizons.json", "horizons.csv", "runs.csv", "horizons.png"):
        assert (tmp_path / "one" / name).stat().st_size > 0, name
    assert (tmp_path / "one/horizons.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((tmp_path / "one/horizons.json").read_text())
    assert list(res) == [
        "study",
        "date",
        "config",
        "overrides",
        "value",
        "more_values",
        "seed",
        "seed_stream",
        "settings",
        "controllers",
        "controller_overrides",
        "reference",
        "episodes",
        "runs",
        "aggregates",
        "wall_s",
        "machine",
    ]
    assert res["reference"] == "T20-quadratic"  # no T100 listed: the longest horizon
    assert len(res["episodes"]) == 2 and len(res["runs"]) == 2 * 2 * 3
    assert res["settings"]["timing"] == "lockstep" and res["settings"]["replan_every"] == 10
    assert res["settings"]["push"] == {"force_n": 50.0, "duration_s": 0.1, "start_s": 0.1}
    assert res["controller_overrides"]["T10-learned"] == [
        "ocp.horizon=10",
        'ocp.terminal.kind="models/v.pt"',
    ]
    for r in res["runs"]:
        assert r["replans"] == 20  # 0.2 s at 1 kHz, every 10 steps
        if r["controller"] == "T20-quadratic":
            assert r["cost_ratio"] == 1.0
        assert r["recovery_time_s"] is None or r["variant"] == "push"
    assert set(res["aggregates"]) == {"no_push", "push"}
    assert res["aggregates"]["push"]["T20-quadratic"]["speedup_vs_reference"] == 1.0
    assert (tmp_path / "one/horizons.csv").read_text().startswith("variant,controller,runs,")
    assert (tmp_path / "one/runs.csv").read_text().startswith("run,episode,variant,controller,")

    # The one subprocess smoke test: the installed command, with a pool of spawned workers.
    two = subprocess.run(
        [sys.executable, "-m", "vmpc", *_study_args("two", 2, here), "--no-plots"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    assert "without push" in two.stdout and not (tmp_path / "two/horizons.png").exists()
    res2 = json.loads((tmp_path / "two/horizons.json").read_text())
    assert res2["episodes"] == res["episodes"]
    assert [(r["episode"], r["variant"], r["controller"]) for r in res2["runs"]] == [
        (r["episode"], r["variant"], r["controller"]) for r in res["runs"]
    ]
    for a, b in zip(res["runs"], res2["runs"], strict=True):
        assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}


@pytest.mark.parametrize(
    "value, reason",
    [
        ("models/missing.pt", "no such file"),
        ("/etc/passwd", "outside the allowed folders"),
        ("models/other.pt", "task fingerprint"),
    ],
)
def test_bad_value_is_one_line_exit_2(tmp_path, monkeypatch, capsys, value, reason):
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/other.pt", load_config(IIWA), fingerprint="sha256:" + "2" * 64)
    monkeypatch.chdir(tmp_path)
    args = ["eval", "horizons", "--config", str(local_config(tmp_path)), "--value", value]
    assert main([*args, "--starts", "2", "--duration", "0.1", "--out", "out"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and reason in lines[0], err
    assert not (tmp_path / "out").exists()  # failed before any run


def _row(ep, variant, ctrl, cost, p50, settle=0.5, recovery=None):
    return RunRow(
        run=0,
        episode=ep,
        variant=variant,
        controller=ctrl,
        terminal="quadratic",
        horizon=10,
        closed_loop_cost=cost,
        ee_error_final_m=1e-3,
        ee_error_max_m=0.1,
        settle_time_s=settle,
        recovery_time_s=recovery,
        peak_deviation_m=None,
        solve_ms_mean=p50,
        solve_ms_p50=p50,
        solve_ms_p99=2 * p50,
        solve_ms_max=3 * p50,
        replans=10,
        deadline_misses=1,
        solver_failures=0,
        warm_start_resets=0,
        fallback_entries=0,
        torque_saturation_steps=0,
        wall_s=0.1,
    )


def test_aggregate_ratios_are_per_episode_then_averaged():
    rows = [
        _row(0, "no_push", "REF", 1.0, 10.0),
        _row(0, "no_push", "A", 1.1, 1.0),
        _row(1, "no_push", "REF", 3.0, 30.0),
        _row(1, "no_push", "A", 3.0, 2.0, settle=None),
        _row(0, "push", "REF", 2.0, 10.0, recovery=0.4),
        _row(0, "push", "A", 4.0, 1.0),
    ]
    agg = aggregate(rows, ["A", "REF"], "REF")
    a, ref = agg["no_push"]["A"], agg["no_push"]["REF"]
    # per-episode ratios 1.1 and 1.0, averaged: not the ratio of means (4.1/4 = 1.025)
    assert a.cost_ratio_mean == pytest.approx(1.05)
    assert a.cost_ratio_median == pytest.approx(1.05)
    assert a.cost_mean == pytest.approx(2.05) and ref.cost_ratio_mean == 1.0
    assert a.never_settled == 1 and a.settle_time_mean_s == pytest.approx(0.5)
    assert a.solve_ms_p50_mean == pytest.approx(1.5) and ref.solve_ms_p50_mean == 20.0
    assert a.speedup_vs_reference == pytest.approx(20.0 / 1.5)
    assert a.deadline_misses == 2 and a.replans == 20
    assert a.recovery_time_mean_s is None and a.never_recovered is None  # no push here
    p = agg["push"]
    assert p["A"].cost_ratio_mean == pytest.approx(2.0)
    assert p["A"].never_recovered == 1 and p["REF"].recovery_time_mean_s == 0.4
    # Without the reference among the rows there are no ratios, and nothing breaks.
    assert aggregate(rows, ["A"], None)["no_push"]["A"].cost_ratio_mean is None


def test_episodes_are_held_out_seeded_and_valid():
    cfg = load_config(IIWA)
    _, robot = build_robot(cfg)
    eps = draw_episodes(cfg, 4, target_conditioned=True, seed=7)
    assert eps == draw_episodes(cfg, 4, target_conditioned=True, seed=7)
    assert eps[0].q0 != draw_episodes(cfg, 1, target_conditioned=True, seed=8)[0].q0
    lo, hi = np.asarray(cfg.task.workspace.min), np.asarray(cfg.task.workspace.max)
    for ep in eps:
        q, target = np.asarray(ep.q0), np.asarray(ep.target)
        assert np.all(q >= robot.q_lower + 0.1 - 1e-9) and np.all(q <= robot.q_upper - 0.1 + 1e-9)
        assert np.all(target >= lo) and np.all(target <= hi)
        robot.check_reachable(target)
        assert np.linalg.norm(robot.ee_position_world(q) - target) >= 0.15
        assert np.linalg.norm(ep.push_force) == pytest.approx(50.0, rel=1e-5)
    fixed = draw_episodes(cfg, 3, target_conditioned=False, seed=7)
    assert all(ep.target == list(cfg.task.target) for ep in fixed)
    # A conditioned value's training box cuts the workspace: held-out targets come from there.
    box = ([0.3, -0.5, 0.2], [0.75, 0.5, 0.8])
    boxed = draw_episodes(cfg, 3, target_conditioned=True, seed=7, target_box=box)
    for ep in boxed:
        assert np.all(np.asarray(ep.target) >= box[0]) and np.all(np.asarray(ep.target) <= box[1])
    with pytest.raises(VmpcError, match="does not overlap task.workspace"):
        draw_episodes(
            cfg, 1, target_conditioned=True, seed=7, target_box=([5.0, 5.0, 5.0], [6.0, 6.0, 6.0])
        )


def test_two_values_side_by_side_in_one_study(tmp_path, monkeypatch, capsys):
    """--value a.pt b.pt: T-learned2 ends in the second; the same weights under two names give
    the same closed loop, run for run."""
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/v.pt", load_config(IIWA))
    shutil.copy(tmp_path / "models/v.pt", tmp_path / "models/w.pt")
    monkeypatch.chdir(tmp_path)
    args = _study_args("two", 1, local_config(tmp_path))
    args[args.index("models/v.pt") + 1 : args.index("models/v.pt") + 1] = ["models/w.pt"]
    i = args.index("--controllers")
    args[i + 1 : i + 4] = ["T5-learned", "T5-learned2", "T10-quadratic"]
    assert main([*args, "--starts", "1", "--no-push", "--no-plots"]) == 0
    assert "value 2 (*-learned2) models/w.pt" in capsys.readouterr().out
    res = json.loads((tmp_path / "two/horizons.json").read_text())
    assert res["more_values"][0]["path"] == "models/w.pt"
    assert res["controller_overrides"]["T5-learned2"][1] == 'ocp.terminal.kind="models/w.pt"'
    cost = {r["controller"]: r["closed_loop_cost"] for r in res["runs"]}
    assert cost["T5-learned"] == cost["T5-learned2"] != cost["T10-quadratic"]
    assert main([*args[:-1], "--sweep", "-q"]) == 2  # a sweep takes one value


def test_override_spelling_and_controller_labels():
    for x in (1e-05, -3.2e-07, 0.1, 2.0, 1e20, 123456.789):
        assert yaml.safe_load(f"[{_yaml_float(x)}]") == [x]
    specs = parse_controllers(["T10-learned", "T200-quadratic"])
    assert specs[0].overrides(["models/v.pt"]) == [
        "ocp.horizon=10",
        'ocp.terminal.kind="models/v.pt"',
    ]
    second = parse_controllers(["T10-learned2"])[0]
    assert second.value_index == 1 and specs[1].value_index is None
    assert second.terminal_kind(["a.pt", "b.pt"]) == "b.pt"
    with pytest.raises(VmpcError, match="ends in value 2, but --value gives 1"):
        StudySettings(config=IIWA, value="a.pt", controllers=("T10-learned2",)).check()
    for bad in (["T10-foo"], ["T0-none"], ["T10-none", "T10-none"], [], ["T10-learned1"]):
        with pytest.raises(VmpcError):
            parse_controllers(bad)


def test_run_config_is_typed_and_equals_its_replay_overrides():
    user = ["mismatch.q_noise_std=0.001", "ocp.horizon=50", "robot.q_posture=null"]
    base = load_config(IIWA, user)
    q0 = [x + 1e-05 for x in base.robot.q0]
    ep = Episode(0, q0, [0.5, 0.1, 0.5], [1e-05, -30.0, 2.5], 123, [0.0] * 3, 0.3)
    kw = {"values": ["models/v.pt"], "duration_s": 0.7, "replan_every": 5, "push": PushSetup()}
    before = base.model_dump()
    for variant in ("no_push", "push"):
        for spec in parse_controllers(["T10-learned", "T30-none"]):
            cfg = run_config(base, ep, variant, spec, **kw)
            replayed = load_config(IIWA, replay_overrides(base, ep, variant, spec, user=user, **kw))
            assert cfg.model_dump() == replayed.model_dump()
            assert cfg.source == replayed.source == str(IIWA)
            assert cfg.robot.q0 == q0 and cfg.robot.q_posture == base.robot.q0
            assert cfg.ocp.horizon == spec.horizon and cfg.mpc.timing == "lockstep"
            assert len(cfg.disturbances.schedule) == (variant == "push")
            sent = pickle.loads(pickle.dumps(cfg))  # what a worker receives
            assert sent == cfg and sent.base_dir == cfg.base_dir == IIWA.parent
    assert base.model_dump() == before  # the base config is copied, never edited
    assert run_config(base, ep, "push", spec, **kw).disturbances.schedule[0].start == 0.35
    # A value the config rejects is the one-line error of the matching --set, before any run.
    with pytest.raises(ConfigError, match=r"^--set ocp.horizon: ocp.horizon: "):
        run_config(base, ep, "push", ControllerSpec("T9000-none", 9000, "none"), **kw)
