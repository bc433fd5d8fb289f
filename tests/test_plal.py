"""PDDP / PLAL: the consensus term against NumDiff, the stochastic Sobolev term against an explicit
Jacobian, tiny end-to-end runs of each variant, determinism, resume, and bad configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import crocoddyl
import numpy as np
import pytest
import torch
import yaml

from learning.dvp.systems import PendulumSpec
from learning.executors import InlineExecutor
from learning.networks import PolicyNet
from learning.plal import trainer
from learning.plal.config import load_plal_config
from learning.plal.consensus import ConsensusActionModel
from learning.plal.oc_phase import build_worker
from learning.plal.systems import LQRSpec, make_family
from learning.sobolev import stochastic_jacobian_loss
from mpc.policy.evaluator import PolicyEvaluator


def _policy(n_in: int, lb, ub, seed: int = 0, activation: str = "tanh") -> PolicyNet:
    torch.manual_seed(seed)
    net = PolicyNet(n_in, lb, ub, [16, 16], activation).double()
    net.set_normalisation(torch.zeros(n_in), torch.full((n_in,), 0.7))
    return net


def _evaluator(net: PolicyNet) -> PolicyEvaluator:
    return PolicyEvaluator(trainer.policy_arrays(net), net.activation)


@pytest.mark.parametrize("mode", ["policy", "reference"])
def test_consensus_derivatives_match_numdiff(mode: str, rng) -> None:
    family = make_family(PendulumSpec(), 10.0)
    lb, ub = family.control_box()
    model = ConsensusActionModel(family.running_model())
    model.mode, model.mu = mode, 0.7
    model.policy = _evaluator(_policy(family.nx, lb, ub))
    model.lam = rng.normal(size=family.nu)
    model.x_ref = rng.normal(size=family.nx)
    model.u_ref = rng.normal(size=family.nu)
    num = crocoddyl.ActionModelNumDiff(model, True)
    data, ndata = model.createData(), num.createData()
    for _ in range(3):
        x, u = rng.normal(size=family.nx), rng.uniform(lb, ub)
        model.calc(data, x, u)
        model.calcDiff(data, x, u)
        num.calc(ndata, x, u)
        num.calcDiff(ndata, x, u)
        assert data.cost == pytest.approx(ndata.cost, rel=1e-12)
        for name in ("Fx", "Fu", "Lx", "Lu"):
            np.testing.assert_allclose(
                np.asarray(getattr(data, name)),
                np.asarray(getattr(ndata, name)),
                atol=2e-5,
                err_msg=name,
            )
        # The Hessian is Gauss-Newton: the base model's plus mu J^T J of the residual.
        base = model.base.createData()
        model.base.calc(base, x, u)
        model.base.calcDiff(base, x, u)
        if mode == "policy":
            jx = model.policy.action_and_jacobian(x)[1]
            np.testing.assert_allclose(data.Lxx, base.Lxx + 0.7 * jx.T @ jx, atol=1e-12)
            np.testing.assert_allclose(
                np.asarray(data.Lxu).reshape(-1),
                (np.reshape(base.Lxu, jx.T.shape) - 0.7 * jx.T).reshape(-1),
                atol=1e-12,
            )
        else:
            np.testing.assert_allclose(data.Lxx, base.Lxx + 0.7 * np.eye(family.nx), atol=1e-12)


def test_policy_mode_is_the_reference_mode_at_the_reference_state(rng) -> None:
    """With x_ref = x, u_ref = pi(x) and gamma = 0 the two modes cost the same (eq. 13 = 15)."""
    family = make_family(LQRSpec(axes=2), 10.0)
    lb, ub = family.control_box()
    pol = _evaluator(_policy(family.nx, lb, ub))
    x, u = rng.normal(size=family.nx), rng.uniform(lb, ub)
    costs = []
    for mode in ("policy", "reference"):
        m = ConsensusActionModel(family.running_model())
        m.mode, m.mu, m.policy, m.lam = mode, 2.0, pol, np.array([0.3, -0.1])
        m.x_ref, m.u_ref = x.copy(), pol.action(x)
        d = m.createData()
        m.calc(d, x, u)
        costs.append(d.cost)
    assert costs[0] == pytest.approx(costs[1], rel=1e-13)


def test_stochastic_sobolev_on_gains_matches_the_explicit_jacobian(rng) -> None:
    family = make_family(PendulumSpec(), 10.0)
    lb, ub = family.control_box()
    net = _policy(family.nx + 1, np.r_[lb, -1.0], np.r_[ub, 2.0], activation="relu")
    ev = _evaluator(net)
    z = torch.from_numpy(rng.normal(size=(5, 3)))
    target = torch.from_numpy(rng.normal(size=(5, 2, 2)))
    v = torch.from_numpy(rng.normal(size=(5, 2)))
    v = v / v.norm(dim=1, keepdim=True)
    got = stochastic_jacobian_loss(net, z, target, v, 2)
    explicit = []
    for zi, ti, vi in zip(z.numpy(), target.numpy(), v.numpy(), strict=True):
        jac = ev.action_and_jacobian(zi)[1][:, :2]  # forward mode, no autograd
        explicit.append(0.5 * np.sum((vi @ jac - vi @ ti) ** 2))
    assert got.item() == pytest.approx(np.mean(explicit), rel=1e-10)
    # And it is a loss on the Jacobian: zero when the target is the policy's own Jacobian.
    own = torch.from_numpy(np.array([ev.action_and_jacobian(zi)[1][:, :2] for zi in z.numpy()]))
    assert stochastic_jacobian_loss(net, z, own, v, 2).item() < 1e-25


# -- end to end ---------------------------------------------------------------------------------
LQR = {
    "system": {"kind": "lqr"},
    "iterations": 3,
    "problems": {"samples": 6, "horizon": 15, "maxiter": 30},
    "policy": {"hidden": [32, 32]},
    "fit": {"epochs": 15, "batch_size": 64, "lr": 3e-3},
    "validation": {"samples": 6},
    "executor": {"workers": 1},
}


def _inline(spec, build, context_json):
    return InlineExecutor(build, context_json)


@pytest.fixture
def fast(monkeypatch):
    """Solves in this process (the executors are tested with DVP), no figures (~1 s each)."""
    from learning.plal import plots

    monkeypatch.setattr(trainer, "make_executor", _inline)
    monkeypatch.setattr(plots, "plot_convergence", lambda *a, **k: None)


def _cfg(tmp_path: Path, overrides: list[str], raw: dict | None = None):
    path = tmp_path / "plal.yaml"
    path.write_text(yaml.safe_dump(raw or LQR))
    return load_plal_config(path, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        # PDDP with the box and +S: through the CLI test below.
        ["algorithm.kind=pddp", "algorithm.constrained=false", "algorithm.sobolev=0"],
        ["algorithm.mu=0.01"],
        ["algorithm.mu=0.01", "algorithm.multiple_shooting=true"],
    ],
    ids=["pods", "plal", "plal+m"],
)
def test_each_variant_learns_the_constrained_lqr(tmp_path, fast, overrides) -> None:
    cfg = _cfg(tmp_path, overrides)
    res = trainer.train_plal(cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["sim_calls_total"] > 0
    # A random policy costs several times the optimum; three iterations get within 35 %.
    assert summary["policy_cost_ratio_median"] < 1.35, summary
    assert res.artifact.exists()
    if cfg.algorithm.kind == "plal":
        assert float(rows[-1]["dual_residual"]) > 0


def test_same_seed_same_policy_and_resume_continues_bit_for_bit(tmp_path, fast) -> None:
    small = ["algorithm.mu=0.1", "problems.horizon=10", "fit.epochs=5"]
    full = trainer.train_plal(_cfg(tmp_path, small), tmp_path / "a", progress=False)
    first = trainer.train_plal(
        _cfg(tmp_path, [*small, "iterations=2"]), tmp_path / "b", progress=False
    )
    assert len(first.metrics) == 2
    resumed = trainer.train_plal(_cfg(tmp_path, small), tmp_path / "b", resume=True, progress=False)
    keys = ("policy_cost_ratio", "control_error", "dual_residual", "sim_calls_total")
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    with pytest.raises(trainer.ConfigMismatch, match="algorithm.mu"):
        trainer.train_plal(
            _cfg(tmp_path, [*small, "algorithm.mu=0.2"]),
            tmp_path / "b",
            resume=True,
            progress=False,
        )


def test_worker_context_builds_every_family() -> None:
    for system in ({"kind": "lqr"}, {"kind": "pendulum"}, {"kind": "double_pendulum"}):
        worker = build_worker(json.dumps({"system": system, "terminal_weight": 1.0}))
        _, solver, knots = worker.problem(5, True)
        assert len(knots) == 5 and isinstance(solver, crocoddyl.SolverBoxFDDP)


@pytest.mark.parametrize(
    ("override", "culprit"),
    [
        ("system.kind=cartpole2", "system.kind"),
        ("algorithm.multiple_shooting=true", "multiple_shooting"),
        ("algorithm.mu=-1", "algorithm.mu"),
        ("problems.horizon=0", "problems.horizon"),
    ],
)
def test_bad_configs_are_refused_in_one_line(tmp_path, cli, override, culprit) -> None:
    path = tmp_path / "plal.yaml"
    path.write_text(yaml.safe_dump(LQR))
    code, out, err = cli(
        "train", "pddp", "--config", path, "--set", override, "--out", tmp_path / "r"
    )
    assert code == 2 and culprit in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["plal_lqr", "plal_pendulum", "plal_double_pendulum"])
def test_shipped_configs_load(name: str) -> None:
    from tests.conftest import CONFIGS

    cfg = load_plal_config(CONFIGS / f"{name}.yaml")
    assert cfg.algorithm.kind == "plal" and cfg.algorithm.constrained


def test_cli_trains_a_policy_whose_artifact_loads(tmp_path, cli) -> None:
    """PDDP+S end to end through the CLI (in this process): it learns the LQR like the other
    variants, and its artifact loads with every check."""
    from mpc.policy.artifact import load_policy_model

    path = tmp_path / "plal.yaml"
    path.write_text(yaml.safe_dump(LQR))
    code, out, err = cli(
        "train",
        "pddp",
        "--config",
        path,
        "--out",
        tmp_path / "r",
        "--executor",
        "inline",
        "-q",
        "--export",
        tmp_path / "pi.pt",
    )
    assert code == 0, err
    assert "J(pi)/J*" in out and (tmp_path / "r" / "convergence.png").exists()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["policy_cost_ratio_median"] < 1.35, summary
    model = load_policy_model(tmp_path / "pi.pt", [tmp_path])
    assert model.metadata.provenance.algorithm == "pddp"
    u = model.evaluator().action(np.array([1.5, -0.5]))
    assert u.shape == (1,) and -1.0 <= u[0] <= 1.0
