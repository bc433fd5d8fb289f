"""``vmpc eval compare`` (the end of ``make demo``): controllers side by side on the config's
own start, target and push, with a tiny budget; and the ``make demo`` line that runs it."""

from __future__ import annotations

import json

from mpc.config import load_config

from .conftest import IIWA, ROOT, local_config, make_artifact


def test_compare_runs_the_configs_own_episode(tmp_path, cli):
    (tmp_path / "models").mkdir()
    make_artifact(tmp_path / "models/v.pt", load_config(IIWA))
    config = local_config(tmp_path)
    cfg = load_config(config)
    # A push inside a 0.2 s run, so the push variant has something to recover from.
    args = ["eval", "compare", "--config", config, "--value", "models/v.pt", "--duration", "0.2"]
    args += ["--controllers", "T5-quadratic", "T5-learned", "T10-quadratic", "--workers", "1"]
    args += ["--set", "disturbances.schedule=[{start: 0.05, duration: 0.05, force: [20, 0, 0]}]"]
    code, out, err = cli(*args, "--no-plots", "--out", "cmp", "-q", cwd=tmp_path)
    assert code == 0, err
    res = json.loads((tmp_path / "cmp/horizons.json").read_text())
    assert res["study"] == "vmpc eval compare" and res["settings"]["episodes"] == "config"
    assert res["reference"] == "T10-quadratic"  # no T100 listed: the longest horizon
    (ep,) = res["episodes"]
    assert ep["q0"] == cfg.robot.q0 and ep["target"] == cfg.task.target
    assert ep["push_force"] == [20.0, 0.0, 0.0] and ep["run_seed"] == cfg.run.seed
    assert res["settings"]["push"] == {"force_n": 20.0, "duration_s": 0.05, "start_s": 0.05}
    assert [r["controller"] for r in res["runs"]] == ["T5-quadratic", "T5-learned", "T10-quadratic"]
    assert {r["variant"] for r in res["runs"]} == {"push"}
    aggs = res["aggregates"]["push"]
    for label, a in aggs.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  {label} "))
        cells = line.split()
        assert cells[1:3] == [f"{float(label[1:].split('-')[0]) * cfg.ocp.dt:g}", "s"]
        assert cells[3] == f"{a['cost_mean']:.4f}" and cells[4] == f"{a['cost_ratio_median']:.3f}"
        assert f"{a['solve_ms_p50_median']:.3f} ms" in line
    assert "T5-learned:" in out and "cost than T10-quadratic" in out

    # Without a scheduled push, the push variant is refused in one line.
    code, _, err = cli(
        *args[:-2], "--set", "disturbances.schedule=[]", "--out", "none", cwd=tmp_path
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--no-push" in err


def test_make_demo_ends_with_the_comparison():
    demo = (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    steps = [ln.strip() for ln in demo.splitlines()[1:] if ln.startswith("\t")]
    assert steps[-1].split()[1:4] == ["eval", "compare", "--config"]
    assert "configs/iiwa_reach_short.yaml" in steps[-1] and "models/iiwa_dvp_short.pt" in steps[-1]
    assert len(steps) == 3  # the two `vmpc sim` runs stay as they are
