"""``vmpc value ...``: inspect, check, upgrade and fit value-model artifacts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    EXIT_OK,
    Handler,
    UsageError,
    add_config,
    add_group,
    add_quiet,
    add_set,
    print_table,
)

__all__ = ["add_inspect", "add_value_commands", "recorded_rows"]


def recorded_rows(meta: Any) -> list[tuple[str, str]]:
    """The rows of ``inspect`` every member of the artifact family shares (a value's or a
    policy's metadata): state, task, training, provenance and hashes."""
    st, pv = meta.state, meta.provenance
    rows = [
        ("state", f"{st.robot}: nx={st.nx} ({st.layout}), joints {', '.join(st.joint_names)}"),
        ("task parameters", ", ".join(meta.task_params) or "none (one fixed task)"),
        ("task fingerprint", meta.task_fingerprint),
        ("trained with", f"dt={meta.trained.dt} s, horizon={meta.trained.horizon}"),
        (
            "provenance",
            f"{pv.algorithm}, iterations={pv.iterations}, samples={pv.samples}, "
            f"{pv.date}, git {pv.git_commit}",
        ),
        ("libraries", ", ".join(f"{k} {v}" for k, v in pv.library_versions.items())),
        ("weights sha256", meta.weights_sha256),
    ]
    if meta.module_sha256:
        rows.append(("TorchScript sha256", meta.module_sha256))
    if pv.notes:
        rows.append(("notes", pv.notes))
    return rows


def cmd_inspect(args: argparse.Namespace) -> int:
    from mpc.value.artifact import read_metadata

    meta = read_metadata(args.path)
    if args.json:
        print(meta.model_dump_json(indent=2))
        return EXIT_OK
    a = meta.architecture
    rows = [
        ("format", f"{meta.format} v{meta.format_version}"),
        (
            "network",
            f"{a.kind}, {a.n_in} -> {a.hidden} -> "
            f"{a.residual_dim if a.kind == 'residual' else 1} ({a.activation})"
            + (", zero on the goal manifold (r(z) - r(z * goal_mask))" if a.goal_zero else ""),
        ),
        ("input features", ", ".join(meta.features) or "none (the raw state)"),
        *recorded_rows(meta),
    ]
    if meta.format_version == 1:
        rows.append(
            ("note", f"format 1: the controller refuses it; run `vmpc value upgrade {args.path}`")
        )
    print_table(rows, str(args.path))
    return EXIT_OK


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Rewrite a format-1 artifact as format 2 (same weights, hashes and fingerprint)."""
    from pathlib import Path

    from mpc.value.artifact import (
        TRUST_MANIFEST,
        ValueModelError,
        file_sha256,
        read_metadata,
        read_trusted,
    )

    src = Path(args.path)
    meta = read_metadata(src)  # runs nothing; a non-model is refused here
    out = Path(args.out) if args.out else src
    if meta.format_version != 1 and args.config:
        return _refingerprint(src, out, args.config)
    if meta.format_version != 1:
        raise ValueModelError(
            f"{src}: already format version {meta.format_version} (--config CFG rewrites an "
            "old task fingerprint)"
        )
    sha = file_sha256(src)
    try:
        trusted = sha in read_trusted(src.resolve().parent)
    except ValueModelError:
        trusted = False
    if not (trusted or args.trust):
        raise ValueModelError(
            f"{src}: upgrading a format-1 file runs its TorchScript, and its sha256 "
            f"{sha[:16]}... is not in {TRUST_MANIFEST} next to it; pass --trust if you trust it"
        )
    from learning.export import upgrade_value

    new = upgrade_value(src, out)
    print(f"upgraded {src} -> {out}  (format 2, weights sha256 {new.weights_sha256[:16]}...)")
    if args.config:
        return _refingerprint(out, out, args.config)
    print(f"  file sha256 {file_sha256(out)}  (add it to {TRUST_MANIFEST} to trust the file)")
    return EXIT_OK


def _refingerprint(src: Path, out: Path, config: str) -> int:
    from learning.export import refingerprint_value
    from mpc.config import load_config
    from mpc.value.artifact import TRUST_MANIFEST, file_sha256

    old, new = refingerprint_value(src, out, load_config(config))
    print(f"rewrote the task fingerprint of {src} -> {out} for {config}")
    print(f"  {old[:23]}... (posture always) -> {new[:23]}... (posture only when it is a cost)")
    print(f"  file sha256 {file_sha256(out)}  (add it to {TRUST_MANIFEST} to trust the file)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Every check a hot swap makes, against the task of --config, with a verdict."""
    from mpc.config import load_config
    from mpc.errors import SwapRefused
    from mpc.loop import ClosedLoop

    cfg = load_config(args.config, ["ocp.terminal.kind=quadratic", *(args.set or [])])
    with ClosedLoop(cfg) as loop:
        x = loop.state.copy()
        try:
            prepared = loop.prepare_terminal(args.path, args.force, x)
        except SwapRefused as exc:
            print(f"REFUSED  {args.path} for {args.config}: {exc}")
            return 1
    verdict = "ACCEPTED (forced)" if prepared.note else "ACCEPTED"
    print(f"{verdict}  {prepared.model_id} for {args.config}")
    if prepared.note:
        print(f"  note: {prepared.note}")
    print(
        "  checks: allowed folder and permissions, format 2 (no code run), size caps, "
        "shapes, weights and TorchScript sha256, robot/state layout/task parameters, "
        "task fingerprint, 5 finite warm-up evaluations, per-call time within "
        f"{cfg.value.max_call_us:g} us, V/Vx/Vxx finite and within "
        f"{cfg.value.max_abs_value:g} at {cfg.value.validation_states} sampled states"
    )
    return EXIT_OK


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a value network to the config's C++ quadratic terminal cost (a known function) and
    export the artifact: the whole learning -> mpc path, before any trainer exists."""
    if not 0 <= args.seed < 2**63:  # numpy and torch seeds; a negative one crashed in numpy
        raise UsageError(f"--seed must be in [0, 2**63), got {args.seed}")
    import torch

    from learning.datasets import ValueDataset, action_model_dataset
    from learning.export import export_value
    from learning.networks import make_value_net
    from learning.sobolev import SobolevFitSpec, fit_sobolev
    from mpc.config import load_config
    from mpc.ocp import QuadraticTerminal, ReachingOCP
    from mpc.robot_model import build_robot
    from mpc.value.artifact import TARGET_PARAMS, StateLayout, TrainedWith, task_fingerprint

    cfg = load_config(args.config, args.set or [])
    _, robot = build_robot(cfg)
    rng = np.random.default_rng(args.seed)
    nq = robot.nq
    q0 = np.asarray(cfg.robot.q0)
    x0 = np.concatenate([q0, np.zeros(nq)])
    # Sample where the MPC's horizon ends: around a long-horizon reach from q0 to the target.
    ref_spec = cfg.ocp.model_copy(update={"horizon": 60})
    ref = ReachingOCP(
        robot, ref_spec, np.asarray(cfg.task.target), QuadraticTerminal(cfg.ocp.terminal), x0
    )
    ref.solver.solve([x0] * 61, [robot.gravity_torques(q0)] * 60, 200, False)
    centres = np.array(ref.solver.xs)[rng.integers(0, 61, args.samples)]
    x = centres + np.hstack(
        [
            rng.uniform(-args.q_spread, args.q_spread, (args.samples, nq)),
            rng.uniform(-args.v_spread, args.v_spread, (args.samples, nq)),
        ]
    )
    x[:, :nq] = np.clip(x[:, :nq], robot.q_lower, robot.q_upper)
    ocp = ReachingOCP(
        robot, cfg.ocp, np.asarray(cfg.task.target), QuadraticTerminal(cfg.ocp.terminal), x0
    )
    term = ocp.problem.terminalModel
    params = list(TARGET_PARAMS) if args.target_conditioned else []
    if args.target_conditioned:  # one target per sample, drawn in the workspace box
        ws = cfg.task.workspace
        targets = rng.uniform(ws.min, ws.max, (args.samples, 3))
        parts = []
        for i in range(args.samples):
            ocp.set_target(targets[i])
            parts.append(action_model_dataset(term, x[i : i + 1], targets[i : i + 1]))
        data = ValueDataset(
            np.vstack([p.z for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.vstack([p.grad_x for p in parts]),
            2 * nq,
        )
    else:
        data = action_model_dataset(term, x)
    torch.manual_seed(args.seed)
    net = make_value_net(args.kind, data.z.shape[1], args.hidden, args.residual_dim)
    spec = SobolevFitSpec(sobolev_lambda=args.sobolev_lambda, epochs=args.epochs, seed=args.seed)
    result = fit_sobolev(net, data, spec, progress=not args.quiet)
    meta = export_value(
        net,
        args.out,
        state=StateLayout(robot=cfg.robot.name, joint_names=robot.joint_names, nx=2 * nq),
        task_params=params,
        task_fingerprint=task_fingerprint(cfg, params),
        algorithm="sobolev-fit:quadratic-terminal",
        trained=TrainedWith(dt=cfg.ocp.dt),
        iterations=args.epochs,
        samples=args.samples,
        notes=f"fit of the config's C++ quadratic terminal; final {json.dumps(result.final)}",
    )
    fin = result.final
    print(f"wrote {args.out}  ({args.kind}, {args.samples} samples, lambda {args.sobolev_lambda})")
    print(
        f"  validation: value NMSE {fin.get('val_value_nmse', float('nan')):.2e}, "
        f"gradient NMSE {fin.get('val_grad_nmse', float('nan')):.2e}"
    )
    print(f"  weights sha256 {meta.weights_sha256[:16]}...")
    return EXIT_OK


def add_inspect(sub: Any, handler: Handler, what: str, **texts: str) -> None:
    """The ``inspect PATH [--json]`` verb of every artifact group (value, policy); ``texts``
    are the parser's help and description."""
    i = sub.add_parser("inspect", **texts)
    i.add_argument("path", help=f"the {what} file")
    i.add_argument("--json", action="store_true", help="the raw metadata JSON")
    i.set_defaults(func=handler)


def add_value_commands(sub: Any) -> None:
    _, vs = add_group(sub, "value", "inspect, check and fit learned value models", "ACTION")

    add_inspect(
        vs, cmd_inspect, "model", help="print a model file's metadata (runs none of its code)"
    )

    c = vs.add_parser(
        "check",
        help="validate a model against a task, as a hot swap would",
        description="Runs every check of a hot swap (allowed folder, integrity, "
        "robot, state layout, task parameters, task fingerprint, "
        "finite warm-up, per-call time) and prints ACCEPTED or "
        "REFUSED with the reason. Exit code 0 or 1.",
    )
    c.add_argument("path")
    add_config(c)
    c.add_argument("--force", action="store_true", help="accept a task-fingerprint mismatch")
    add_set(c)
    c.set_defaults(func=cmd_check)

    u = vs.add_parser(
        "upgrade",
        help="rewrite a format-1 model file as format 2, or an old task fingerprint (--config)",
        description="Loads a format-1 file (which RUNS its TorchScript) and writes it as "
        "format 2: the same module, weights, weights sha256 and task fingerprint, plus the "
        "weights as safetensors, which the controller loads without running anything. The "
        "file must be listed in TRUSTED.sha256 next to it, or --trust must say you trust it. "
        "With --config, a file whose task fingerprint is that config's by the formula before "
        "December 2026 (which held the posture even when no cost used it) gets the current "
        "one; that rebuilds the module from its weights and runs nothing from the file.",
    )
    u.add_argument("path")
    u.add_argument("--out", help="where to write (default: in place)")
    u.add_argument(
        "--config", help="the YAML config the model was trained for: rewrite its fingerprint"
    )
    u.add_argument(
        "--trust",
        action="store_true",
        help="run the file's TorchScript although it is not in the manifest",
    )
    u.set_defaults(func=cmd_upgrade)

    f = vs.add_parser(
        "fit",
        help="fit a value to the config's quadratic terminal and export it",
        description="Sobolev-fits a value network to the C++ quadratic terminal "
        "cost of --config on random states, and writes the artifact. "
        "Useful to exercise swaps and the learning -> mpc contract.",
    )
    add_config(f)
    f.add_argument("--out", required=True, help="artifact path, e.g. models/quad_fit.pt")
    f.add_argument("--kind", choices=["residual", "feedforward"], default="residual")
    f.add_argument("--hidden", type=int, nargs="+", default=[64, 64, 64])
    f.add_argument("--residual-dim", type=int, default=16)
    f.add_argument("--samples", type=int, default=4000)
    f.add_argument("--epochs", type=int, default=200)
    f.add_argument("--sobolev-lambda", type=float, default=1.0)
    f.add_argument(
        "--q-spread",
        type=float,
        default=0.3,
        help="[rad] around a long-horizon reach from q0 to the target",
    )
    f.add_argument("--v-spread", type=float, default=0.5, help="[rad/s] around the same")
    f.add_argument(
        "--target-conditioned",
        action="store_true",
        help="input [x, target]; targets drawn in the task's workspace box",
    )
    f.add_argument("--seed", type=int, default=0)
    add_set(f)
    add_quiet(f)
    f.set_defaults(func=cmd_fit)
