"""``vmpc eval horizons --sweep``: a tiny sweep in-process (2 horizons x 2 terminal kinds, one
episode, a tenth of a second), its files against its printed table, and bad flags."""

from __future__ import annotations

import csv
import json

import pytest

from mpc.config import load_config
from vmpc.studies.horizons import format_sweep_table, read_sweep, sweep_grid

from .conftest import CONFIGS, IIWA, ROOT, local_config, make_artifact


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A folder with a config and a random-weight value; every test writes its own --out."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "models").mkdir()
    make_artifact(folder / "models/v.pt", load_config(IIWA))
    local_config(folder)
    return folder


def test_tiny_sweep_files_match_the_table(sweep_dir, cli):
    config = sweep_dir / IIWA.name
    args = ["eval", "horizons", "--sweep", "--config", config, "--value", "models/v.pt"]
    args += ["--horizons", "5", "2", "--terminals", "learned", "quadratic"]
    args += ["--starts", "1", "--duration", "0.1", "--workers", "1", "--no-plots", "--out", "sw"]
    code, out, err = cli(*args, "-q", cwd=sweep_dir)
    assert code == 0, err
    res = json.loads((sweep_dir / "sw/sweep.json").read_text())
    assert res["horizons"] == [2, 5] and res["terminals"] == ["learned", "quadratic"]
    assert res["reference"] == "T5-quadratic" and res["episodes"] == 1
    assert res["value"]["model_id"].startswith("v.pt@") and res["value"]["model_id"] in out
    points = res["points"]
    assert [(p["variant"], p["controller"]) for p in points] == [
        (v, f"T{h}-{t}")
        for v in ("no_push", "push")
        for t in ("learned", "quadratic")
        for h in (2, 5)
    ]
    # The CSV holds the JSON's points, every digit; the table holds them rounded.
    with open(sweep_dir / "sw/sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(points)
    for row, p in zip(rows, points, strict=True):
        assert row["controller"] == p["controller"]
        for key in ("cost_ratio_median", "solve_ms_median", "ee_error_final_median_mm"):
            assert float(row[key]) == p[key]
    lines = {tuple(ln.split()[:2]): ln.split()[2:] for ln in out.splitlines() if ln[:3] == "  l"}
    lines |= {tuple(ln.split()[:2]): ln.split()[2:] for ln in out.splitlines() if ln[:3] == "  q"}
    assert set(lines) == {(t, h) for t in ("learned", "quadratic") for h in ("2", "5")}
    for (terminal, h), cells in lines.items():
        a, b = (
            next(p for p in points if p["controller"] == f"T{h}-{terminal}" and p["variant"] == v)
            for v in ("no_push", "push")
        )
        assert cells[:6] == [
            f"{a['cost_ratio_median']:.4f}",
            f"{b['cost_ratio_median']:.4f}",
            f"{a['solve_ms_median']:.3f}",
            f"{b['solve_ms_median']:.3f}",
            f"{a['ee_error_final_median_mm']:.3f}",
            f"{b['ee_error_final_median_mm']:.3f}",
        ]
    assert out.startswith(format_sweep_table(read_sweep(sweep_dir / "sw/sweep.json")) + "\n")
    ref = [p for p in points if p["controller"] == "T5-quadratic"]
    assert all(p["cost_ratio_median"] == 1.0 for p in ref)
    # The horizons study's own files come along (every run, the episodes to replay them).
    runs = json.loads((sweep_dir / "sw/horizons.json").read_text())["runs"]
    assert len(runs) == 1 * 2 * 4 and not (sweep_dir / "sw/sweep.png").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sweep", "--terminals", "learned", "cubic"], "'cubic' is not a terminal kind"),
        (["--sweep", "--horizons", "10", "0"], "'0' is not a horizon"),
        (["--sweep", "--horizons", "-3"], "'-3' is not a horizon"),
        (["--sweep", "--horizons", "ten"], "'ten' is not a horizon"),
        (["--sweep", "--horizons", "5", "5"], "5 is listed twice"),
        (["--horizons", "5", "10"], "add --sweep"),
        (["--sweep", "--controllers", "T10-none"], "exclude each other"),
        (["--sweep", "--value", "models/missing.pt"], "no such file"),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(sweep_dir, cli, flags, message):
    config = sweep_dir / IIWA.name
    args = ["eval", "horizons", "--config", config, "--value", "models/v.pt", "--out", "out"]
    code, _, err = cli(*args, *flags, cwd=sweep_dir)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (sweep_dir / "out").exists()


def test_sweep_grid_reference_is_the_longest_quadratic():
    labels, ref = sweep_grid(["200", 2, 50], ["none", "quadratic"])
    assert labels == (
        "T2-none",
        "T50-none",
        "T200-none",
        "T2-quadratic",
        "T50-quadratic",
        "T200-quadratic",
    )
    assert ref == "T200-quadratic"
    assert sweep_grid([3, 10], ["learned", "none"])[1] == "T10-learned"  # no quadratic


def test_shipped_config_finds_its_models_from_any_folder(tmp_path, monkeypatch):
    """value.allowed_dirs (../models in the shipped configs) resolve against the config file's
    folder, as the loader resolves them, not against the working directory."""
    from vmpc.studies.horizons.study import _check_value

    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "iiwa_reach_short.yaml")
    meta = _check_value(cfg, str(ROOT / "models/iiwa_dvp_short.pt"))
    assert meta.task_params == []
