"""Q-learning with a grid max on Schramm et al.'s 1D toy (Sec. 4), value-only or first-order.

One :meth:`QLearningAgent.update`, top to bottom (Schramm Alg. 1, max-target branch):

1. A minibatch (s, a) ~ U[-1, 1]^2, s' = a, r = 0.2 a - (a - s)^2, with the toy's exact
   derivatives (ds'/ds = 0, ds'/da = 1).
2. a' = argmax over a grid of ``train.grid`` actions of the target critic at s' (step 8, held
   as a stop-gradient: da'/ds' = 0, Sec. 3.1), y = r + gamma Qbar(s', a') (step 9).
3. grad_s y = grad_s r, grad_a y = grad_a r + gamma grad_s' Qbar(s', a') (step 10).
4. The critic minimises (Q - y)^2 + lambda_s |grad_s Q - grad_s y|^2 + lambda_a |grad_a Q -
   grad_a y|^2 (step 12; lambda = 0 is the baseline), then the target follows by Polyak
   averaging (step 14).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..envs.toy1d import GAMMA, Toy1DOptimum, toy_reward
from .config import CriticConfig
from .networks import EnsembleMLPCritic, QuadraticCritic
from .targets import Batch, GradientBalancer, first_order_targets, sobolev_terms

__all__ = ["QLearningAgent", "toy_errors"]


class QLearningAgent:
    """``members`` independent runs (seeds) trained together, each on its own minibatches."""

    def __init__(self, cfg: CriticConfig, members: int = 1) -> None:
        self.cfg, self.members = cfg, members
        c = cfg.critic

        def make() -> torch.nn.Module:
            if c.kind == "quadratic":
                return QuadraticCritic(members)
            return EnsembleMLPCritic(members, 1, 1, c.hidden, c.activation)

        self.q = make()
        self.q_targ = make()
        self.q_targ.load_state_dict(self.q.state_dict())
        for p in self.q_targ.parameters():
            p.requires_grad_(False)
        self.optim = torch.optim.Adam(self.q.parameters(), lr=cfg.train.lr)
        sob = cfg.sobolev
        self.balancer = GradientBalancer(sob.zeta_s, sob.zeta_a, sob.balance, sob.every)
        self.grid = torch.linspace(-1.0, 1.0, cfg.train.grid)

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        """Step 1: n transitions for each member, shaped (E, n, .)."""
        s, a = rng.uniform(-1.0, 1.0, (2, self.members, n))
        f = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
        e = self.members
        return Batch(
            s=f(s[..., None]),
            a=f(a[..., None]),
            r=f(toy_reward(s, a)),
            s2=f(a[..., None]),
            done=torch.zeros(e, n),
            f_x=torch.zeros(e, n, 1, 1),
            f_u=torch.ones(e, n, 1, 1),
            r_x=f(2.0 * (a - s))[..., None],
            r_u=f(0.2 - 2.0 * (a - s))[..., None],
        )

    def _bootstrap(self, s2: Tensor) -> Tensor:
        """Step 2: Qbar(s', a') with a' the grid's argmax, held constant."""
        with torch.no_grad():
            e, n, m = s2.shape[0], s2.shape[1], self.grid.shape[0]
            q_all = self.q_targ(
                s2.detach().repeat_interleave(m, 1), self.grid.repeat(e, n)[..., None]
            )
            a2 = self.grid[q_all.view(e, n, m).argmax(dim=2)][..., None]
        return self.q_targ(s2, a2)

    def update(self, batch: Batch) -> dict[str, float]:
        sob = self.cfg.sobolev
        targets = first_order_targets(
            self._bootstrap, batch, self.cfg.train.gamma, gradients=sob.enabled
        )
        terms = sobolev_terms(
            self.q,
            batch.s,
            batch.a,
            targets,
            gradients=sob.enabled,
            loss=sob.loss,
            delta=sob.huber_delta,
        )
        if sob.enabled:
            beta_s, beta_a = self.balancer(terms, list(self.q.parameters()))
            loss = terms.value + beta_s * terms.grad_s + beta_a * terms.grad_a
        else:
            beta_s = beta_a = 0.0
            loss = terms.value
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        with torch.no_grad():
            for p, pt in zip(self.q.parameters(), self.q_targ.parameters(), strict=True):
                pt.lerp_(p, self.cfg.train.tau)
        return {
            "loss_q": float(terms.value.detach()) / self.members,
            "loss_s": float(terms.grad_s.detach()) / self.members,
            "loss_a": float(terms.grad_a.detach()) / self.members,
            "beta_s": beta_s,
            "beta_a": beta_a,
        }

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"q.{k}": v for k, v in self.q.state_dict().items()}
        out.update({f"q_targ.{k}": v for k, v in self.q_targ.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.q.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("q.")})
        self.q_targ.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("q_targ.")})

    def optim_state(self) -> dict[str, Any]:
        return {
            "state": {},
            "param_groups": [],
            "q": self.optim.state_dict(),
            "balancer": self.balancer.state_dict(),
        }

    def load_optim_state(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["q"])
        self.balancer.load_state_dict(state["balancer"])


def toy_errors(q: torch.nn.Module, optimum: Toy1DOptimum, points: int = 101) -> np.ndarray:
    """Schramm's Table 1 columns for each member, (E, 3): MSE to Q* and to grad_a Q* on a
    points x points grid of (s, a), and the MSE of the greedy action argmax_a Q(s, a) (a
    201-action grid) to a*(s)."""
    members = _members(q)
    g = np.linspace(-1.0, 1.0, points)
    s, a = (m.ravel() for m in np.meshgrid(g, g, indexing="ij"))

    def f(v: np.ndarray) -> torch.Tensor:  # the same points for every member, (E, N, 1)
        return torch.as_tensor(
            np.broadcast_to(v, (members, len(v)))[..., None].copy(), dtype=torch.float32
        )

    at = f(a).requires_grad_(True)
    qv = q(f(s), at)
    (dq_da,) = torch.autograd.grad(qv.sum(), at)
    q_mse = np.mean((qv.detach().numpy() - optimum.q(s, a)) ** 2, axis=1)
    g_mse = np.mean((dq_da.numpy()[..., 0] - optimum.dq_da(s, a)) ** 2, axis=1)
    acts = np.linspace(-1.0, 1.0, 201)
    with torch.no_grad():
        qg = q(f(np.repeat(g, len(acts))), f(np.tile(acts, len(g))))
        greedy = acts[qg.view(members, len(g), len(acts)).argmax(dim=2).numpy()]
    pi_mse = np.mean((greedy - optimum.a_star(g)[None, :]) ** 2, axis=1)
    return np.stack([q_mse, g_mse, pi_mse], axis=1)


def _members(q: torch.nn.Module) -> int:
    return int(next(iter(q.parameters())).shape[0])


assert GAMMA == 0.9  # the toy's discount; configs for it must say train.gamma: 0.9
