"""Sobolev critics: every environment's Jacobians against finite differences, the first-order
targets against autograd through a differentiable toy, check_env, the toy's optimum, tiny
end-to-end runs of both algorithms, resume, and bad configs refused in one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from learning.critics.config import load_critic_config
from learning.critics.export import critic_fingerprint
from learning.critics.qlearning import QLearningAgent, toy_errors
from learning.critics.targets import Batch, first_order_targets
from learning.critics.trainer import train_critic
from learning.envs.swingup import SwingUpEnv, SwingUpSpec
from learning.envs.toy1d import Toy1DEnv, toy1d_optimum, toy_derivatives, toy_reward
from mpc.value.artifact import load_value_model

from .conftest import central_difference

REAL = {
    "pendulum": {"overrides": {"mass": 1.5}, "damping": 0.3, "coulomb": 0.2, "deadband": 0.3},
    "cartpole": {
        "overrides": {"cart_mass": 2.0, "pole_mass": 0.3},
        "damping": 0.2,
        "coulomb": 0.1,
        "deadband": 0.5,
    },
}


@pytest.mark.parametrize("kind", ["pendulum", "cartpole"])
def test_swingup_jacobians_match_finite_differences(kind: str, rng) -> None:
    env = SwingUpEnv(SwingUpSpec(system={"kind": kind}, real=REAL[kind]))
    exact = SwingUpEnv(SwingUpSpec(system={"kind": kind}))  # real == nominal
    for _ in range(3):
        x = rng.normal(size=env.nx)
        u = rng.uniform(0.5, 1.0, env.nu) * rng.choice([-1, 1], env.nu)  # away from the deadband
        f_x, f_u, r_x, r_u = env.derivatives(x, u, "exact")
        step = env.real.step
        np.testing.assert_allclose(f_x, central_difference(lambda y, u=u: step(y, u), x), atol=1e-6)  # noqa: B023
        np.testing.assert_allclose(f_u, central_difference(lambda v, x=x: step(x, v), u), atol=1e-6)  # noqa: B023

        def cost(y, v):
            env._nominal.calc(env._nominal_data, y, v)
            return -env._nominal_data.cost

        np.testing.assert_allclose(r_x, central_difference(lambda y, u=u: cost(y, u), x), atol=1e-6)
        np.testing.assert_allclose(r_u, central_difference(lambda v, x=x: cost(x, v), u), atol=1e-6)
        # Without a mismatch the real dynamics are Crocoddyl's own, values and Jacobians.
        exact._nominal.calc(exact._nominal_data, x, u)
        np.testing.assert_allclose(exact.real.step(x, u), exact._nominal_data.xnext, atol=1e-12)
        n_x, n_u, _, _ = exact.derivatives(x, u, "nominal")
        e_x, e_u, _, _ = exact.derivatives(x, u, "exact")
        fd_x, fd_u, _, _ = exact.derivatives(x, u, "finite_difference")
        np.testing.assert_allclose(n_x, e_x, atol=1e-10)
        np.testing.assert_allclose(n_u, e_u, atol=1e-10)
        np.testing.assert_allclose(fd_x, n_x, atol=1e-6)
        np.testing.assert_allclose(fd_u, n_u, atol=1e-6)
    # The mismatch is real: the nominal Jacobian is not the real one.
    assert not np.allclose(env.derivatives(x, u, "nominal")[0], f_x, atol=1e-3)


def test_toy_derivatives_and_optimum(rng) -> None:
    s, a = rng.uniform(-1, 1, 2)
    f_x, f_u, r_x, r_u = toy_derivatives(s, a)
    assert f_x[0, 0] == 0 and f_u[0, 0] == 1
    fd = central_difference
    np.testing.assert_allclose(r_x, fd(lambda y: toy_reward(y[0], a), np.array([s])))
    np.testing.assert_allclose(r_u, fd(lambda v: toy_reward(s, v[0]), np.array([a])))
    opt = toy1d_optimum()
    # Bellman: V*(s) = max_a Q*(s, a), reached at a*(s), on a grid finer than the solver's.
    ss, acts = np.linspace(-1, 1, 41), np.linspace(-1, 1, 4001)
    q = opt.q(ss[:, None], acts[None, :])
    np.testing.assert_allclose(q.max(axis=1), opt.v(ss), atol=1e-5)
    np.testing.assert_allclose(acts[q.argmax(axis=1)], opt.a_star(ss), atol=2e-3)
    sa = rng.uniform(-1, 1, (2, 200))
    fd = (opt.q(sa[0], sa[1] + 1e-5) - opt.q(sa[0], sa[1] - 1e-5)) / 2e-5
    np.testing.assert_allclose(opt.dq_da(sa[0], sa[1]), fd, atol=5e-3)


@pytest.mark.parametrize("through_policy", [True, False])
def test_first_order_targets_match_autograd(through_policy: bool) -> None:
    """y(s, a) = r(s, a) + gamma W(f(s, a)) differentiated by autograd end to end, against the
    chain rule through stored Jacobians; W goes through a policy a' = pi(s') or holds a'."""
    torch.manual_seed(0)
    nx, nu, n, gamma = 3, 2, 5, 0.9
    A, B = torch.randn(nx, nx), torch.randn(nx, nu)
    q = torch.nn.Sequential(torch.nn.Linear(nx + nu, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    pi = torch.nn.Sequential(torch.nn.Linear(nx, nu), torch.nn.Tanh())

    def f(s, a):
        return torch.tanh(s @ A.T + a @ B.T)

    def r(s, a):
        return -(s.square().sum(-1) + 0.1 * (a**3).sum(-1) + (s[:, :nu] * a).sum(-1))

    def bootstrap(s2, held=None):
        a2 = pi(s2) if held is None else held
        return q(torch.cat([s2, a2], -1)).squeeze(-1)

    s, a = torch.randn(n, nx, dtype=torch.float32), torch.randn(n, nu)
    s2 = f(s, a).detach()
    held = None if through_policy else pi(s2).detach()

    def rows(fn, x: torch.Tensor, other: torch.Tensor, wrt_first: bool) -> torch.Tensor:
        """Per-row Jacobians of fn(s, a) with respect to s (wrt_first) or a."""
        out = []
        for i in range(n):
            o = other[i : i + 1]
            if wrt_first:
                g = lambda v, o=o: fn(v[None], o)[0]  # noqa: E731
            else:
                g = lambda v, o=o: fn(o, v[None])[0]  # noqa: E731
            out.append(torch.autograd.functional.jacobian(g, x[i]))
        return torch.stack(out)

    batch = Batch(
        s=s,
        a=a,
        r=r(s, a),
        s2=s2,
        done=torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]),
        f_x=rows(f, s, a, True),
        f_u=rows(f, a, s, False),
        r_x=rows(r, s, a, True),
        r_u=rows(r, a, s, False),
    )
    t = first_order_targets(lambda x: bootstrap(x, held), batch, gamma)
    ss, aa = s.clone().requires_grad_(True), a.clone().requires_grad_(True)
    cont = gamma * (1 - batch.done)
    y = r(ss, aa) + cont * bootstrap(f(ss, aa), held)
    g_s, g_a = torch.autograd.grad(y.sum(), (ss, aa))
    torch.testing.assert_close(t.y, y.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.dy_ds, g_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.dy_da, g_a, atol=1e-5, rtol=1e-5)


def test_environments_pass_check_env() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the non-normalised action box warning
        check_env(Toy1DEnv(), skip_render_check=True)
        for kind in ("pendulum", "cartpole"):
            check_env(SwingUpEnv(SwingUpSpec(system={"kind": kind}, real=REAL[kind])))


def test_first_order_q_learning_beats_value_only_on_the_toy() -> None:
    """Same seeds, same minibatches: the quadratic critic with the gradient terms ends closer
    to grad_a Q* and to the optimal policy than the value-only one."""
    opt = toy1d_optimum()
    errors = {}
    for enabled in (False, True):
        cfg = load_critic_config(
            "configs/critic_toy.yaml",
            [
                "critic.kind=quadratic",
                "train.lr=0.01",
                "train.tau=0.02",
                "train.grid=20",
                f"sobolev.enabled={enabled}",
            ],
        )
        torch.manual_seed(0)
        agent = QLearningAgent(cfg, members=2)
        rng = np.random.default_rng(0)
        for _ in range(800):
            agent.update(agent.sample(50, rng))
        errors[enabled] = toy_errors(agent.q, opt).mean(axis=0)
    assert errors[True][1] < 0.5 * errors[False][1]  # grad_a Q*
    assert errors[True][2] < errors[False][2]  # greedy policy


def _tiny_sac(steps: int, sobolev: bool = True) -> list[str]:
    return [
        f"train.steps={steps}",
        "train.learning_starts=30",
        "train.batch_size=16",
        "env.horizon=40",
        "eval.every=40",
        "eval.episodes=1",
        "critic.hidden=[16]",
        "actor.hidden=[16]",
        f"sobolev.enabled={sobolev}",
    ]


def test_sac_runs_and_resumes_bit_for_bit(tmp_path) -> None:
    cfg = load_critic_config("configs/critic_pendulum.yaml", _tiny_sac(120))
    straight = train_critic(cfg, tmp_path / "straight")
    short = load_critic_config("configs/critic_pendulum.yaml", _tiny_sac(80))
    train_critic(short, tmp_path / "killed")
    resumed = train_critic(cfg, tmp_path / "killed", resume=True, export=tmp_path / "v.pt")
    assert [m["return_mean"] for m in resumed.metrics] == [
        m["return_mean"] for m in straight.metrics
    ]
    assert resumed.metrics[-1]["loss_q"] == straight.metrics[-1]["loss_q"]
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["env_steps"] == 120 and np.isfinite(summary["final_return_mean"])
    assert straight.metrics[-1]["beta_s"] > 0  # the balancer ran
    assert (tmp_path / "killed" / "curves.png").stat().st_size > 0
    # The critic's state value as a value artifact: loads without running code, and its task
    # is the critic's (discounted), not the DVP pendulum's.
    value = load_value_model(tmp_path / "v.pt", [tmp_path])
    assert value.metadata.provenance.algorithm == "vg-sac" and value.nx == 2
    assert value.metadata.task_fingerprint == critic_fingerprint(cfg)
    assert np.isfinite(summary["value_fit"]["val_grad_nmse"])


def test_cli_trains_the_toy_and_refuses_bad_configs(tmp_path, cli) -> None:
    code, out, _ = cli(
        "train", "critic", "--config", "configs/critic_toy.yaml", "--out", tmp_path / "toy",
        "--seeds", "2", "--set", "critic.kind=quadratic", "--set", "train.steps=20",
        "--set", "eval.every=10",
    )  # fmt: skip
    assert code == 0 and "Q* MSE" in out
    rows = (tmp_path / "toy" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "grad_a_mse" in rows[0]
    for args, culprit in (
        (["--config", "configs/critic_toy.yaml", "--set", "env.kind=swingup"], "env.system"),
        (["--set", "algorithm=qlearning", "--config", "configs/critic_pendulum.yaml"], "qlearning"),
        (["--set", "eval.every=150"], "eval.every"),
        (["--set", "sobolev.jacobians=magic"], "sobolev.jacobians"),
    ):
        config = [] if "--config" in args else ["--config", "configs/critic_pendulum.yaml"]
        # train.steps=1: a config wrongly accepted fails the test fast instead of training.
        code, _, err = cli(
            "train", "critic", *config, *args, "--set", "train.steps=1", "--out", tmp_path / "bad"
        )
        assert code != 0 and culprit in err and len(err.strip().splitlines()) == 1, err


def test_study_analysis_reads_reach_ratios_off_the_mean_curves() -> None:
    from vmpc.studies.critics import CriticsStudy, analyse, format_critics

    def run(*ys: float) -> dict:
        return {
            "final_return_mean": ys[-1],
            "curve": [[1000 * (i + 1), y] for i, y in enumerate(ys)],
        }

    study = CriticsStudy(env="toy", seeds=2, steps=6000)
    study.variants = {
        "sac": [run(-9, -9, -8, -6, -5, -4), run(-9, -9, -8, -6, -5, -2)],  # final mean -3
        "vg-sac": [run(-9, -6, -3, -3, -3, -3), run(-9, -6, -3, -3, -3, -3)],
    }
    analyse(study)
    assert study.reach["sac_final_level"] == -3.0
    assert study.reach["sac"] == 6000 and study.reach["vg-sac"] == 3000
    assert study.reach_half["level"] == -5.5  # half way from the median of the first five (-8)
    assert study.reach_best["level"] == -3.0 and study.reach_best["vg-sac"] == 3000
    table = format_critics(study)
    assert "0.50" in table.splitlines()[-2]  # vg-sac: half SAC's steps
