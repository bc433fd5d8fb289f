"""``vmpc policy ...``: inspect and check warm-start policy artifacts (mpc/policy/artifact.py).

Neither command runs anything from the file: ``inspect`` reads its metadata from the zip, and
``check`` loads it with every check of the loader and evaluates the policy with the numpy
evaluator from the checked weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .common import EXIT_OK, UsageError, add_group, add_set, print_table
from .value import add_inspect, recorded_rows

__all__ = ["add_policy_commands"]

# Spread of the check states around the start state (config) or 0, when the file records no
# training box: q with 0.3 rad, v with 0.5 rad/s, as the value tests sample.
Q_SPREAD, V_SPREAD = 0.3, 0.5


def _box(lo: list[float], hi: list[float]) -> str:
    return ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi, strict=True))


def cmd_inspect(args: argparse.Namespace) -> int:
    from mpc.policy.artifact import read_policy_metadata

    meta = read_policy_metadata(args.path)
    if args.json:
        print(meta.model_dump_json(indent=2))
        return EXIT_OK
    a, box = meta.architecture, meta.control_box
    rows = [
        ("format", f"{meta.format} v{meta.format_version}"),
        (
            "network",
            f"{a.kind}, {a.n_in} -> {a.hidden} -> {a.nu} ({a.activation}), "
            "tanh output scaled into the control box",
        ),
        ("control box", _box(box.u_lb, box.u_ub)),
        *recorded_rows(meta),
    ]
    print_table(rows, str(args.path))
    return EXIT_OK


def _inputs(meta: Any, n: int, x0: np.ndarray, theta0: np.ndarray, seed: int) -> np.ndarray:
    """n inputs z = [x, theta] to evaluate a policy at: the start (x0, theta0) first, then
    states in the recorded training box (else around x0) and task parameters in the recorded
    task box (else theta0)."""
    rng = np.random.default_rng(seed)
    nx, n_theta = meta.state.nx, len(meta.task_params)
    state_box, task_box = meta.trained.state_box, meta.trained.task_box
    if state_box is not None and len(state_box[0]) == nx:
        xs = rng.uniform(state_box[0], state_box[1], (n, nx))
    else:
        nq = nx // 2
        spread = np.r_[np.full(nq, Q_SPREAD), np.full(nx - nq, V_SPREAD)]
        xs = x0 + rng.normal(0.0, 1.0, (n, nx)) * spread
    if n_theta and task_box is not None and len(task_box[0]) == n_theta:
        thetas = rng.uniform(task_box[0], task_box[1], (n, n_theta))
    else:
        thetas = np.repeat(theta0[None, :], n, axis=0)
    z = np.hstack([xs, thetas])
    z[0] = np.r_[x0, theta0]
    return z


def cmd_check(args: argparse.Namespace) -> int:
    """Load with every check, compare with --config's task, evaluate at a few inputs."""
    from mpc.policy.artifact import PolicyModelError, load_policy_model
    from mpc.value.artifact import TARGET_PARAMS, check_task, errors_as

    if args.states < 1:
        raise UsageError(f"--states must be at least 1, got {args.states}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be in [0, 2**63), got {args.seed}")
    if args.set and args.config is None:
        raise UsageError("--set changes the --config; give one")
    if args.config is None:
        # The file named on the command line is what is allowed (as `vmpc value inspect` reads
        # any path); its folder still passes the owner and permission checks.
        real = Path(args.path).expanduser().resolve()
        model = load_policy_model(args.path, [real.parent])
        meta = model.metadata
        x0, theta0 = np.zeros(meta.state.nx), np.zeros(len(meta.task_params))
        task = "no --config: task not compared"
    else:
        from mpc.config import load_config
        from mpc.robot_model import build_robot
        from mpc.value.terminal import value_bases

        cfg = load_config(args.config, args.set or [])
        model = load_policy_model(args.path, cfg.value.allowed_dirs, value_bases(cfg))
        meta = model.metadata
        _, robot = build_robot(cfg)
        with errors_as(PolicyModelError):
            mismatch = check_task(model, cfg, 2 * robot.nq, robot.joint_names)
        if mismatch is not None:
            raise PolicyModelError(f"{args.path}: {mismatch}")
        if model.nu != robot.nq:
            raise PolicyModelError(
                f"{args.path}: {model.nu} controls, this robot has {robot.nq} joint torques"
            )
        x0 = np.r_[np.asarray(cfg.robot.q0, dtype=float), np.zeros(robot.nq)]
        target = np.asarray(cfg.task.target, dtype=float)
        theta0 = target if meta.task_params == list(TARGET_PARAMS) else np.zeros(0)
        task = f"robot, joints, task parameters and task fingerprint of {args.config}"
    ev = model.evaluator()
    for i, z in enumerate(_inputs(meta, args.states, x0, theta0, args.seed)):
        where = "the start state" if i == 0 else f"sampled input {i}"
        u, du = ev.action_and_jacobian(z)
        if not (np.isfinite(u).all() and np.isfinite(du).all()):
            raise PolicyModelError(f"{args.path}: pi(z) or d pi/dz is not finite at {where}")
        if ((u < ev.u_lb) | (u > ev.u_ub)).any():
            raise PolicyModelError(f"{args.path}: pi(z) leaves the control box at {where}")
    print(f"ok  {model.model_id}")
    print(
        "  checks: allowed folder and permissions, size caps, format vmpc-policy v2 (no code "
        "run), shapes, weights and TorchScript sha256, input width, control box in the "
        f"weights = metadata's; {task}; u and du/dz finite and inside the box at "
        f"{args.states} inputs"
    )
    return EXIT_OK


def add_policy_commands(sub: Any) -> None:
    _, ps = add_group(sub, "policy", "inspect and check warm-start policy files", "ACTION")

    add_inspect(
        ps,
        cmd_inspect,
        "policy",
        help="print a policy file's metadata (runs none of its code)",
        description="Prints the metadata of a policy artifact (format vmpc-policy): network, "
        "control box, state layout, task parameters and fingerprint, training and provenance, "
        "hashes. Reads only metadata.json from the archive; any path may be given.",
    )

    c = ps.add_parser(
        "check",
        help="load a policy with every check and evaluate it at a few states",
        description="Loads the file as the controller would, running none of its code (owner "
        "and permissions of the file and its folder, size caps, format, tensor shapes, weights "
        "and TorchScript sha256, input width, control box in the weights = the metadata's), "
        "then evaluates u = pi(z) and du/dz with the numpy evaluator at --states inputs (the "
        "training box when the file records one) and prints 'ok' and the model id. Without "
        "--config the file's own folder is allowed; with --config it must lie in that "
        "config's value.allowed_dirs, and a policy for another robot, joint layout, task "
        "parameters or task fingerprint is refused. Errors: one line, exit code 2.",
    )
    c.add_argument("path", help="the policy file")
    c.add_argument(
        "--config",
        default=None,
        help="an arm MPC config (e.g. configs/iiwa_reach.yaml): the task the policy must fit",
    )
    c.add_argument("--states", type=int, default=16, help="inputs to evaluate at (default 16)")
    c.add_argument("--seed", type=int, default=0, help="of the sampled inputs")
    add_set(c)
    c.set_defaults(func=cmd_check)
