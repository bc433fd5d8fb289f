"""``vmpc train dvp``: offline value learning (the algorithm lives in learning/dvp/)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import EXIT_OK, UsageError, add_config, add_group, add_out, add_quiet, add_set

__all__ = ["add_train_commands"]


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set, then the executor flags (which win)."""
    overrides = list(args.set or [])
    if args.executor:
        overrides.append(f"executor.kind={args.executor}")
    if args.address:
        overrides.append(f"executor.address={args.address}")
    if args.workers:
        overrides.append(f"executor.workers={args.workers}")
    return overrides


def _run_folder(args: argparse.Namespace, stem: str) -> Path:
    if args.out:
        return Path(args.out)
    if args.resume:
        raise UsageError("--resume needs --out (the run folder to continue)")
    return Path("runs") / time.strftime(f"{stem}-%Y%m%d-%H%M%S")


def _run_kwargs(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """What every trainer takes from the command line besides its config and run folder."""
    import yaml

    return {
        "resume": args.resume,
        "progress": not args.quiet,
        "export": Path(args.export) if args.export else None,
        "config_text": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "log": lambda line: print(line, flush=True),
    }


def cmd_train_policy(args: argparse.Namespace) -> int:
    from learning.plal.config import load_plal_config
    from learning.plal.trainer import train_plal

    cfg = load_plal_config(args.config, _overrides(args), kind=args.algorithm)
    out = _run_folder(args, f"{args.algorithm}-{cfg.system.kind}")
    result = train_plal(cfg, out, **_run_kwargs(args, cfg))
    s = result.summary
    print(
        f"vmpc train {args.algorithm}: {s['system']}, {s['iterations']} iterations "
        f"-> {result.artifact}"
    )
    print(
        f"  held out: J(pi)/J* {s['policy_cost_ratio_median']:.4f} median, "
        f"{s['policy_cost_ratio_p90']:.4f} p90; control error {s['control_error']:.3e}; "
        f"gain error {s['gain_error']:.3f}"
    )
    print(
        f"  {s['sim_calls_total']} simulator calls, {s['train_s']:.0f} s; metrics.csv, "
        f"convergence.png and summary.json in {out}"
    )
    if args.export:
        print(f"  exported {args.export}")
    return EXIT_OK


def _add_out_and_resume(p: Any, default: str, may_change: str) -> None:
    """--out and --resume; ``may_change``: what a resumed config may change."""
    add_out(p, None, f"run folder (default runs/{default}-<date>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out after a kill: same config (only {may_change} may "
        "change); damaged checkpoints fall back to the last intact iteration",
    )


def _add_run_options(p: Any, stem: str) -> None:
    _add_out_and_resume(p, f"{stem}-<system>", "executor.* and the iteration count")
    p.add_argument(
        "--executor", choices=["local", "ray", "inline"], help="executor.kind (inline: no workers)"
    )
    p.add_argument("--address", help="Ray cluster address (executor.address)")
    p.add_argument("--workers", type=int, help="solver processes (executor.workers)")


def cmd_train_dvp(args: argparse.Namespace) -> int:
    from learning.dvp.config import load_dvp_config
    from learning.dvp.trainer import train_dvp

    cfg = load_dvp_config(args.config, _overrides(args))
    out = _run_folder(args, f"dvp-{cfg.system.kind}")
    result = train_dvp(cfg, out, **_run_kwargs(args, cfg))
    last = result.metrics[-1]
    print(
        f"vmpc train dvp: {cfg.system.kind}, {len(result.metrics)} iterations -> {result.artifact}"
    )
    print(
        f"  value rel. error {last['value_rel_error']:.3%}, gradient rel. error "
        f"{last['grad_rel_error']:.3%}, Bellman residual {last['bellman_residual']:.2e}"
    )
    print(
        f"  {sum(m['solves'] for m in result.metrics)} OCP solves "
        f"({sum(m['rejected'] for m in result.metrics)} rejected), "
        f"{sum(m['iteration_s'] for m in result.metrics):.0f} s; metrics.csv and plots in {out}"
    )
    if args.export:
        print(f"  exported {args.export}")
    return EXIT_OK


def _hyperparameters(pairs: list[str] | None) -> dict[str, Any]:
    """--hp KEY=VALUE pairs, values read as YAML (512, 3.0e-4, true)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--hp {pair!r}: expected KEY=VALUE, e.g. --hp n_steps=512")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"--hp {pair!r}: the value is not valid YAML") from None
    return out


def cmd_train_baseline(args: argparse.Namespace) -> int:
    from learning.baselines.sb3 import train_baseline
    from learning.plal.config import load_plal_config

    if args.steps < 1:
        raise UsageError("--steps must be a positive number of simulator steps")
    eval_every = max(args.steps // 20, 1) if args.eval_every is None else args.eval_every
    if eval_every < 1:
        raise UsageError("--eval-every must be a positive number of simulator steps")
    hp = _hyperparameters(args.hp)
    cfg = load_plal_config(args.config, args.set)
    stem = f"{args.algo}-{cfg.system.kind}"
    out = Path(args.out) if args.out else Path("runs") / time.strftime(f"{stem}-%Y%m%d-%H%M%S")
    s = train_baseline(
        cfg,
        args.algo,
        args.steps,
        out,
        eval_every,
        progress=not args.quiet,
        log=lambda line: print(line, flush=True),
        hyperparameters=hp,
    )
    print(
        f"vmpc train baseline: {args.algo} on {s['system']}, {s['sim_calls_total']} simulator "
        f"calls, {s['wall_s']:.0f} s"
    )
    print(
        f"  held out: J(pi)/J* {s['policy_cost_ratio_median']:.4f} median, "
        f"{s['policy_cost_ratio_p90']:.4f} p90 (best median "
        f"{s['best_policy_cost_ratio_median']:.4f}); metrics.csv, convergence.png and "
        f"summary.json in {out}"
    )
    return EXIT_OK


def cmd_train_critic(args: argparse.Namespace) -> int:
    from learning.critics.config import load_critic_config
    from learning.critics.trainer import train_critic

    if args.seeds < 1:
        raise UsageError("--seeds must be >= 1")
    cfg = load_critic_config(args.config, list(args.set or []))
    if args.seeds > 1 and cfg.algorithm != "qlearning":
        raise UsageError("--seeds > 1 is for Q-learning on the toy; use `vmpc eval critics`")
    out = _run_folder(args, f"critic-{cfg.algorithm}-{cfg.task_name}")
    res = train_critic(cfg, out, seeds=args.seeds, **_run_kwargs(args, cfg))
    s = res.summary
    kind = "first-order" if s["sobolev"] else "value-only"
    print(f"vmpc train critic: {s['algorithm']} ({kind}) on {s['env']}, {s['wall_s']:.0f} s")
    if cfg.algorithm == "qlearning":
        print(
            f"  {s['updates']} updates, {args.seeds} seed(s): Q* MSE {s['q_mse']:.3e}, "
            f"grad_a Q* MSE {s['grad_a_mse']:.3e}, greedy policy MSE {s['policy_mse']:.3e}"
        )
    else:
        print(
            f"  {s['env_steps']} environment steps: held-out return {s['final_return_mean']:.2f}"
            f" (best {s['best_return_mean']:.2f})"
        )
    print(f"  metrics.csv, curves.png and summary.json in {out}")
    if args.export:
        print(f"  critic value (value artifact) -> {args.export} and {out / 'value.pt'}")
    return EXIT_OK


def add_train_commands(sub: Any) -> None:
    _, ts = add_group(
        sub, "train", "offline training of terminal values and warm-start policies", "ALGORITHM"
    )
    d = ts.add_parser(
        "dvp",
        help="Differential Value Programming with Sobolev regression",
        description="Trains a value by DVP (Parag et al. 2022): solve N OCPs ending in the "
        "previous value, Sobolev-fit the next one, repeat. Writes config.yaml, "
        "metrics.csv, convergence plots, atomic per-iteration checkpoints and the "
        "TorchScript artifact value.pt into the run folder.",
    )
    add_config(d, None, "DVP config, e.g. configs/dvp_iiwa.yaml")
    _add_run_options(d, "dvp")
    d.add_argument("--export", help="also write the artifact here, e.g. models/iiwa_dvp.pt")
    add_set(d)
    add_quiet(d)
    d.set_defaults(func=cmd_train_dvp)
    for name, summary, alg in (
        (
            "plal",
            "policy learning by ADMM (PLAL): OC and the policy reach a consensus",
            "PLAL (Le Lidec et al., Alg. 2): each iteration solves N OCPs with the "
            "augmented-Lagrangian term mu/2 ||u + lambda/mu - pi(x)||^2 (exact derivatives "
            "through the policy; with algorithm.multiple_shooting, against the policy's own "
            "states), fits the policy to u + lambda/mu (+ the stochastic Sobolev term on the DDP "
            "gains), then updates lambda.",
        ),
        (
            "pddp",
            "projected DDP (PDDP): solve from the policy's rollout, regress the policy",
            "PDDP (Le Lidec et al., Alg. 1): each iteration rolls the policy out as the initial "
            "guess, solves N OCPs (BoxFDDP with the control box, or FDDP with "
            "algorithm.constrained: false), and regresses the policy on the solutions (+ the "
            "stochastic Sobolev term on the DDP gains).",
        ),
    ):
        p = ts.add_parser(
            name,
            help=summary,
            description=alg + " Writes config.yaml, metrics.csv (held-out J(pi)/J*, control "
            "and gain errors, dual residual, simulator calls), convergence.png, summary.json, "
            "atomic per-iteration checkpoints and the policy artifact policy.pt.",
        )
        add_config(p, None, "policy config, e.g. configs/plal_pendulum.yaml")
        _add_run_options(p, name)
        p.add_argument("--export", help="also write the policy artifact here")
        add_set(p)
        add_quiet(p)
        p.set_defaults(func=cmd_train_policy, algorithm=name)
    b = ts.add_parser(
        "baseline",
        help="model-free reference: PPO or SAC (stable-baselines3) on a policy config's OCPs",
        description="The model-free reference of Le Lidec et al.'s Fig. 3: trains PPO or SAC "
        "(stable-baselines3, default hyperparameters, the config's policy network) on a gymnasium "
        "environment whose episodes are the config's OCPs (reward = minus the OC cost, horizon "
        "problems.horizon), and scores the deterministic policy by the held-out J(pi)/J* of "
        "`vmpc train plal` (same validation problems, same TO optimum). Budgets are counted in "
        "simulator steps (dynamics evaluations), the unit of PLAL's simulator calls, so both "
        "curves share one axis. Writes config.yaml, metrics.csv, convergence.png and "
        "summary.json; no model file (SB3 saves pickles, which this project never loads).",
    )
    add_config(b, None, "policy config, e.g. configs/plal_lqr.yaml")
    b.add_argument("--algo", required=True, choices=["ppo", "sac"], help="the RL algorithm")
    b.add_argument(
        "--steps",
        type=int,
        required=True,
        help="training budget in simulator steps (PPO rounds up to whole rollouts of n_steps)",
    )
    b.add_argument(
        "--eval-every",
        type=int,
        help="score the policy on the held-out problems every this many steps (default: steps/20)",
    )
    add_out(b, None, "run folder (default runs/<algo>-<system>-<date>)")
    b.add_argument(
        "--hp",
        action="append",
        metavar="KEY=VALUE",
        help="override an SB3 hyperparameter, e.g. --hp n_steps=512 (repeatable; values are YAML)",
    )
    add_set(b)
    add_quiet(b)
    b.set_defaults(func=cmd_train_baseline)
    c = ts.add_parser(
        "critic",
        help="first-order (Sobolev) critics: Q-learning on the 1D toy, SAC / VG-SAC",
        description="Trains an off-policy critic whose TD target is matched in value and in its "
        "derivatives through a model's Jacobians (Schramm et al.; VG-SAC, Gurumurthy et al.). "
        "algorithm: qlearning is the grid-max Q-learning of the 1D toy; algorithm: sac is SAC "
        "on a swing-up or on the arm (configs/critic_arm.yaml: PyBullet) whose data come from "
        "the 'real' system and whose Jacobians come from sobolev.jacobians (nominal, exact or "
        "finite_difference; the arm has no exact). sobolev.enabled: false is the "
        "value-only baseline, same code. Writes config.json, metrics.csv (held-out return or "
        "the toy's errors to the optimum, losses, gradient weights, wall time, environment "
        "steps), curves.png, summary.json and atomic checkpoints (--resume after a kill).",
    )
    add_config(c, None, "critic config, e.g. configs/critic_pendulum.yaml")
    _add_out_and_resume(c, "critic-<algorithm>-<task>", "train.steps and torch_threads")
    c.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="Q-learning only: train this many independent critics together (seed, seed+1, ...)",
    )
    c.add_argument(
        "--export",
        help="SAC: also write the critic's state value -min Q(s, mu(s)) (less its minimum), "
        "distilled into the residual value network, as a value artifact here; on the arm it "
        "carries the MPC config's fingerprint, so the MPC loads it as its terminal value. With "
        "--resume on a finished run: export without training",
    )
    add_set(c)
    add_quiet(c)
    c.set_defaults(func=cmd_train_critic)
