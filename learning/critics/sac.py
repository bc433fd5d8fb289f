"""SAC with a first-order (Sobolev) critic: VG-SAC (Gurumurthy et al. 2023, Sec. 4.4) and
Schramm et al.'s first-order SAC are this update with ``sobolev.enabled``; without it, this is
plain SAC (Haarnoja et al. 2018), the baseline, with the same networks and hyperparameters.

One :meth:`SACAgent.update` on a minibatch, top to bottom:

1. The bootstrap W(s') = min_j Qbar_j(s', a') - alpha log pi(a' | s'), a' = pi(s', eps') with a
   fixed draw eps' (Gurumurthy eq. 13; Schramm Sec. 2, y_SAC). With ``through_policy`` its
   s'-gradient includes the path through a'(s') and the entropy term (Schramm Sec. 3.1:
   "including the derivative of the entropy term"); without, a' is held constant (Gurumurthy's
   eq. 14-15 read literally).
2. y, grad_s y, grad_a y by the chain rule through the stored Jacobians
   (:func:`~learning.critics.targets.first_order_targets`; Gurumurthy eq. 12 with the nominal
   model's Jacobians, Schramm Sec. 3.1 with the true ones).
3. Each twin critic minimises l(Q - y) + beta_s l(grad_s Q - grad_s y) + beta_a l(grad_a Q -
   grad_a y) (Gurumurthy eq. 16; beta from eq. 18 when balanced).
4. The actor minimises E[alpha log pi(a|s) - min_j Q_j(s, a)] (Gurumurthy eq. 17), and alpha
   follows the entropy target -dim(a) when ``alpha: auto``.
5. Polyak averaging of the target critics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .config import CriticConfig
from .networks import MLPCritic, SquashedGaussianActor
from .targets import Batch, GradientBalancer, first_order_targets, sobolev_terms

__all__ = ["SACAgent"]


class SACAgent:
    def __init__(
        self, cfg: CriticConfig, nx: int, nu: int, box: tuple[Any, Any], angles: list[int]
    ) -> None:
        self.cfg = cfg
        c, t = cfg.critic, cfg.train
        make_q = lambda: MLPCritic(nx, nu, c.hidden, c.activation, angles)  # noqa: E731
        self.q1, self.q2 = make_q(), make_q()
        self.q1_targ, self.q2_targ = make_q(), make_q()
        self.q1_targ.load_state_dict(self.q1.state_dict())
        self.q2_targ.load_state_dict(self.q2.state_dict())
        for p in (*self.q1_targ.parameters(), *self.q2_targ.parameters()):
            p.requires_grad_(False)
        self.actor = SquashedGaussianActor(nx, box[0], box[1], cfg.actor.hidden, angles)
        self.critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.q_optim = torch.optim.Adam(self.critic_params, lr=t.lr)
        self.pi_optim = torch.optim.Adam(self.actor.parameters(), lr=t.lr)
        self.auto_alpha = t.alpha == "auto"
        init = math.log(t.alpha_init if t.alpha == "auto" else float(t.alpha))
        self.log_alpha = torch.tensor(init, requires_grad=self.auto_alpha)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=t.lr)
        self.target_entropy = -float(nu)
        sob = cfg.sobolev
        self.balancer = GradientBalancer(sob.zeta_s, sob.zeta_a, sob.balance, sob.every)
        self.nu = nu

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def act(self, s: Tensor, *, deterministic: bool) -> Tensor:
        with torch.no_grad():
            if deterministic:
                return self.actor.mean_action(s)
            return self.actor.sample(s, torch.randn(s.shape[0], self.nu))[0]

    def _bootstrap(self, s2: Tensor, eps: Tensor) -> Tensor:
        """W(s') (step 1)."""
        alpha = self.log_alpha.detach().exp()
        if self.cfg.sobolev.through_policy:
            a2, logp = self.actor.sample(s2, eps)
        else:  # a' and its log-probability held constant: no path through the actor
            with torch.no_grad():
                a2, logp = self.actor.sample(s2.detach(), eps)
        q = torch.min(self.q1_targ(s2, a2), self.q2_targ(s2, a2))
        return q - alpha * logp

    def update(self, batch: Batch) -> dict[str, float]:
        sob, gamma = self.cfg.sobolev, self.cfg.train.gamma
        grads = sob.enabled
        # 1-2: the first-order TD target (the actor's parameter gradients are discarded below).
        eps = torch.randn(batch.s.shape[0], self.nu)
        targets = first_order_targets(
            lambda s2: self._bootstrap(s2, eps), batch, gamma, gradients=grads
        )
        self.actor.zero_grad(set_to_none=True)
        # 3: the twin critics.
        kw: dict[str, Any] = {"gradients": grads, "loss": sob.loss, "delta": sob.huber_delta}
        t1 = sobolev_terms(self.q1, batch.s, batch.a, targets, **kw)
        t2 = sobolev_terms(self.q2, batch.s, batch.a, targets, **kw)
        value = t1.value + t2.value
        if grads:
            both = type(t1)(value, t1.grad_s + t2.grad_s, t1.grad_a + t2.grad_a)
            beta_s, beta_a = self.balancer(both, self.critic_params)
            loss = value + beta_s * both.grad_s + beta_a * both.grad_a
        else:
            beta_s = beta_a = 0.0
            loss = value
        self.q_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.q_optim.step()
        # 4: the actor, then the temperature.
        a_new, logp = self.actor.sample(batch.s, torch.randn(batch.s.shape[0], self.nu))
        q_new = torch.min(self.q1(batch.s, a_new), self.q2(batch.s, a_new))
        pi_loss = (self.log_alpha.detach().exp() * logp - q_new).mean()
        self.pi_optim.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.pi_optim.step()
        if self.auto_alpha:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optim.step()
        # 5: Polyak.
        tau = self.cfg.train.tau
        with torch.no_grad():
            for net, targ in ((self.q1, self.q1_targ), (self.q2, self.q2_targ)):
                for p, pt in zip(net.parameters(), targ.parameters(), strict=True):
                    pt.lerp_(p, tau)
        return {
            "loss_q": float(value.detach()) / 2,
            "loss_s": float((t1.grad_s + t2.grad_s).detach()) / 2,
            "loss_a": float((t1.grad_a + t2.grad_a).detach()) / 2,
            "beta_s": beta_s,
            "beta_a": beta_a,
            "alpha": self.alpha,
        }

    def value(self, s: Tensor) -> Tensor:
        """The critic's state value at the deterministic action, min_j Q_j(s, mu(s))."""
        a = self.actor.mean_action(s)
        return torch.min(self.q1(s, a), self.q2(s, a))

    # -- checkpoints --------------------------------------------------------------------------
    def _nets(self) -> dict[str, torch.nn.Module]:
        return {
            "q1": self.q1,
            "q2": self.q2,
            "q1_targ": self.q1_targ,
            "q2_targ": self.q2_targ,
            "actor": self.actor,
        }

    def state_dict(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, net in self._nets().items():
            out.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        out["log_alpha"] = self.log_alpha.detach().clone()
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, net in self._nets().items():
            prefix = f"{name}."
            net.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])

    def optim_state(self) -> dict[str, Any]:
        return {
            "state": {},
            "param_groups": [],
            "q": self.q_optim.state_dict(),
            "pi": self.pi_optim.state_dict(),
            "alpha": self.alpha_optim.state_dict(),
            "balancer": self.balancer.state_dict(),
        }

    def load_optim_state(self, state: dict[str, Any]) -> None:
        self.q_optim.load_state_dict(state["q"])
        self.pi_optim.load_state_dict(state["pi"])
        self.alpha_optim.load_state_dict(state["alpha"])
        self.balancer.load_state_dict(state["balancer"])
