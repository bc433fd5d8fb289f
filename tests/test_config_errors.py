"""Bad input gets one line naming the file and key; the CLI exits 2 without a traceback."""

from pathlib import Path

import pytest
import yaml

from mpc.config import load_config
from mpc.errors import ConfigError
from mpc.loop import ClosedLoop

from .conftest import IIWA


def write_variant(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(IIWA.read_text())
    edit(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


CASES = {
    "unknown key": (lambda r: r["ocp"].update(horizn=10), "ocp.horizn: unknown key"),
    "wrong type": (lambda r: r["ocp"].update(dt="fast"), "ocp.dt:"),
    "horizon zero": (
        lambda r: r["ocp"].update(horizon=0),
        "ocp.horizon: Input should be greater than 0",
    ),
    "missing urdf": (
        lambda r: r["robot"].update(urdf="nowhere/robot.urdf"),
        "robot.urdf: URDF 'nowhere/robot.urdf' not found",
    ),
    "unknown frame": (
        lambda r: r["robot"].update(ee_frame="flange"),
        "robot.ee_frame: frame 'flange' not in the robot model",
    ),
    "unreachable target": (
        lambda r: r["task"].update(target=[0.9, 0.9, 1.2]),
        "task.target: target [0.9, 0.9, 1.2] is unreachable",
    ),
    "target outside workspace": (
        lambda r: r["task"].update(target=[2.0, 0.0, 0.5]),
        "task: target [2.0, 0.0, 0.5] is outside the workspace",
    ),
    "wrong torque limit count": (
        lambda r: r["robot"].update(torque_limits=[1, 2, 3]),
        "robot: q0 has 7 entries but torque_limits has 3",
    ),
    "nan": (lambda r: r["ocp"].update(dt=float("nan")), "ocp.dt:"),
    "unknown terminal": (
        lambda r: r["ocp"]["terminal"].update(kind="cubic"),
        "ocp.terminal.kind: 'cubic' is not 'none', 'quadratic' or the path of a value model",
    ),
    "unknown push link": (
        lambda r: r["disturbances"]["schedule"][0].update(link="elbow"),
        "disturbances: link 'elbow' not in the URDF",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_names_file_and_key(case, tmp_path):
    edit, expected = CASES[case]
    path = write_variant(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        ClosedLoop(load_config(path)).close()
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("ocp.nope=3", "--set ocp.nope: ocp.nope: unknown key"),
        ("ocp.horizon=-1", "--set ocp.horizon: ocp.horizon: Input should be greater than 0"),
        ("robot.q0.9=1", "--set: robot.q0.9: '9' is not an index of a 7-list"),
        ("ocp.horizon", "--set: ocp.horizon: expected key.sub=value"),
    ],
)
def test_bad_set_override(assignment, expected):
    with pytest.raises(ConfigError) as info:
        load_config(IIWA, [assignment])
    assert str(info.value) == expected


def test_set_override_applies():
    cfg = load_config(IIWA, ["ocp.horizon=20", "ocp.costs.torque_reg=1e-2", "robot.q0.0=0.3"])
    assert cfg.ocp.horizon == 20 and cfg.ocp.costs.torque_reg == 1e-2 and cfg.robot.q0[0] == 0.3


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("robot: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: line 2: not valid YAML"):
        load_config(bad)


def test_cli_reports_one_line_and_exit_2(cli, tmp_path):
    path = write_variant(tmp_path, lambda r: r["ocp"].update(horizon=0))
    code, stdout, stderr = cli("sim", "--config", path, "--out", tmp_path / "run")
    assert code == 2
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "pybullet build" not in ln]
    assert lines == [f"vmpc: error: {path}: ocp.horizon: Input should be greater than 0"]
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "run").exists()
