"""What the tests share: config paths, the CLI in-process and in a subprocess, bounded waits,
and small random-weight value artifacts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pytest

if TYPE_CHECKING:
    from mpc.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
IIWA = CONFIGS / "iiwa_reach.yaml"
PANDA = CONFIGS / "panda_reach.yaml"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def central_difference(f: Callable[[np.ndarray], Any], x: np.ndarray, eps: float = 1e-6) -> Any:
    """The Jacobian of f at x by central differences, one column per coordinate of x."""
    cols = []
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = eps
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * eps))
    return np.stack(cols, axis=-1)


def random_configuration(
    rng: np.random.Generator, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Uniform within the inner 80% of the joint range, so no limit constraint is active."""
    lo, hi = np.maximum(lower, -3.0), np.minimum(upper, 3.0)
    margin = 0.1 * (hi - lo)
    return rng.uniform(lo + margin, hi - margin)


# -- waiting ---------------------------------------------------------------------------------------
def wait_until(
    condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


# -- the CLI ---------------------------------------------------------------------------------------
class CliResult(NamedTuple):
    """Exit code and captured output of one ``vmpc`` invocation (unpacks as a 3-tuple)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch) -> Callable[..., CliResult]:
    """``cli("sim", "--duration", "0.1", cwd=tmp_path)`` runs ``vmpc.cli.main`` in this process,
    in ``cwd`` (default: the repository root), and returns (exit code, stdout, stderr).

    Log records at WARNING and above go to the captured stderr, formatted as the command's own
    ``logging.basicConfig`` would on a real stderr."""
    from vmpc.cli import main

    def run(*argv: object, cwd: Path = ROOT) -> CliResult:
        monkeypatch.chdir(cwd)
        capsys.readouterr()  # only this call's output
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            root.removeHandler(handler)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def vmpc_subprocess(
    *args: object, cwd: Path = ROOT, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m vmpc ARGS`` as a real process: for the smoke tests of the entry point."""
    return subprocess.run(
        [sys.executable, "-m", "vmpc", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


# -- value artifacts -------------------------------------------------------------------------------
def make_artifact(
    path: Path,
    cfg: Config,
    *,
    kind: str = "residual",
    task_params=(),
    nx: int | None = None,
    robot_name: str | None = None,
    fingerprint: str | None = None,
    seed: int = 0,
    residual_dim: int = 16,
    edit=None,
    features=(),
    goal_zero: bool = False,
) -> Path:
    """A random-weight value; ``edit(net)`` may change its (float64) weights before export.
    ``features`` and ``goal_zero`` make a task-space, zero-on-the-goal model (residual only)."""
    import torch

    from learning.export import export_value
    from learning.networks import FeedForwardValueNet, ResidualValueNet
    from mpc.robot_model import build_robot
    from mpc.value.artifact import StateLayout, task_fingerprint
    from mpc.value.features import feature_dim, goal_mask

    _, robot = build_robot(cfg)
    nx = 2 * robot.nq if nx is None else nx
    n_in = nx + len(task_params) + feature_dim(features)
    mask = torch.from_numpy(goal_mask(nx // 2, len(task_params), features)) if goal_zero else None
    torch.manual_seed(seed)
    net = (
        ResidualValueNet(n_in, residual_dim=residual_dim, goal_mask=mask)
        if kind == "residual"
        else FeedForwardValueNet(n_in)
    )
    net.double()
    if edit is not None:
        with torch.no_grad():
            edit(net)
    names = robot.joint_names if nx == 2 * robot.nq else [f"j{i}" for i in range(nx // 2)]
    export_value(
        net,
        path,
        state=StateLayout(robot=robot_name or cfg.robot.name, joint_names=names, nx=nx),
        task_params=list(task_params),
        task_fingerprint=fingerprint or task_fingerprint(cfg, task_params),
        algorithm="test-random",
        features=list(features),
    )
    return Path(path)


def local_config(folder: Path, source: Path = IIWA) -> Path:
    """A copy of a shipped config in ``folder`` whose value models load from ``folder/models``
    (``value.allowed_dirs`` is relative to the config file; the shipped ones say ../models)."""
    text = source.read_text()
    shipped = "allowed_dirs: [../models]"
    assert shipped in text, f"{source} no longer says {shipped}"
    path = folder / source.name
    path.write_text(text.replace(shipped, "allowed_dirs: [models]"))
    return path


def random_states(cfg: Config, n: int, seed: int = 0) -> np.ndarray:
    """n states around the config's q0: q with 0.3 rad, v with 0.5 rad/s spread."""
    rng = np.random.default_rng(seed)
    q0 = np.asarray(cfg.robot.q0)
    return np.hstack([q0 + rng.normal(0, 0.3, (n, len(q0))), rng.normal(0, 0.5, (n, len(q0)))])


__all__ = [
    "local_config",
    "CONFIGS",
    "IIWA",
    "PANDA",
    "ROOT",
    "CliResult",
    "make_artifact",
    "random_configuration",
    "random_states",
    "vmpc_subprocess",
    "wait_until",
]


def slow_solves(loop: Any, delay_s: float) -> None:
    """Make every replan of ``loop`` take at least ``delay_s`` of wall time (wallclock-timing
    tests: the plan then goes live late, or too old)."""
    import time

    ctrl = loop.controller
    solver = ctrl.ocp.solver

    class SlowSolver:
        def __getattr__(self, name: str) -> Any:
            return getattr(solver, name)

        def solve(self, *args: Any) -> Any:
            time.sleep(delay_s)
            return solver.solve(*args)

    ctrl.solver = SlowSolver()
