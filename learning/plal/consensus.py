"""The consensus term of PLAL as a Crocoddyl action model (Le Lidec et al., eq. (13) and (15)).

:class:`ConsensusActionModel` wraps one knot's running model and adds

* ``mode="policy"`` (single shooting, eq. (13)): mu/2 ||u + lambda/mu - pi(z)||^2 with
  z = [x, theta]. pi depends on x, so this is a residual in x and u, r = u + lambda/mu - pi(z),
  with r_x = -d pi/dx and r_u = I: Lx = -mu pi_x^T r, Lu = mu r, and the Gauss-Newton Hessian
  Lxx = mu pi_x^T pi_x, Lxu = -mu pi_x^T, Luu = mu I (the policy's second derivatives are
  left out: zero almost everywhere for a ReLU network, and DDP only needs a PSD model).
* ``mode="reference"`` (multiple shooting, eq. (15)): mu/2 ||u + lambda/mu - u_ref||^2 +
  mu/2 ||x - x_ref||^2 with u_ref = pi(x_ref) fixed for the OC phase: no policy evaluation and
  no policy Jacobian inside the solver. The state multiplier gamma of eq. (15) is 0 by
  construction (learning/plal/trainer.py: the 2X-step solved in closed form), so it is not
  carried.
* ``mu = 0``: the plain running model (PDDP's OC phase), still counting simulator calls.

The constant -||lambda||^2/(2 mu) of eq. (15) changes no argmin and is left out. The box of the
wrapped model is the wrapper's box, so BoxFDDP sees the same control limits. Per-knot values
(lambda, references) live on the model, one model per knot; per-call caches in the data.
"""

from __future__ import annotations

from typing import Any, Literal

import crocoddyl
import numpy as np

from mpc.policy.evaluator import PolicyEvaluator

__all__ = ["ConsensusActionModel", "ConsensusData"]


class ConsensusData(crocoddyl.ActionDataAbstract):
    def __init__(self, model: ConsensusActionModel) -> None:
        crocoddyl.ActionDataAbstract.__init__(self, model)
        self.base = model.base.createData()
        self.r_u = np.zeros(model.nu)  # the control residual at the last calc


class ConsensusActionModel(crocoddyl.ActionModelAbstract):
    """One running knot plus the augmented-Lagrangian consensus term (see the module doc)."""

    def __init__(self, base: Any) -> None:
        crocoddyl.ActionModelAbstract.__init__(self, base.state, base.nu, base.nr)
        self.base = base
        if base.has_control_limits:
            self.u_lb, self.u_ub = base.u_lb.copy(), base.u_ub.copy()
        nx, nu = base.state.nx, base.nu
        self.mode: Literal["policy", "reference"] = "policy"
        self.mu = 0.0  # [-] penalty; 0 switches the term off
        self.lam = np.zeros(nu)  # lambda_t, the multiplier of u_t = pi(x_t)
        self.u_ref = np.zeros(nu)  # pi(2x_t) (reference mode)
        self.x_ref = np.zeros(nx)  # 2x_t (reference mode)
        self.policy: PolicyEvaluator | None = None
        self.theta = np.zeros(0)  # task parameters appended to x as the policy's input
        self.calls = 0  # dynamics evaluations: the simulator calls of the OC phase

    def createData(self) -> ConsensusData:
        return ConsensusData(self)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, self.theta]) if len(self.theta) else x

    def calc(self, data: ConsensusData, x: np.ndarray, u: np.ndarray | None = None) -> None:
        if u is None:
            u = np.zeros(self.nu)
        self.calls += 1
        b = data.base
        self.base.calc(b, x, u)
        data.xnext[:] = b.xnext
        cost = b.cost
        if self.mu > 0.0:
            if self.mode == "policy":
                assert self.policy is not None, "policy mode needs a policy"
                ref = self.policy.action(self._z(x))
            else:
                ref = self.u_ref
                e = x - self.x_ref
                cost += 0.5 * self.mu * float(e @ e)
            data.r_u[:] = u - ref + self.lam / self.mu
            cost += 0.5 * self.mu * float(data.r_u @ data.r_u)
        data.cost = cost

    def calcDiff(self, data: ConsensusData, x: np.ndarray, u: np.ndarray | None = None) -> None:
        if u is None:
            u = np.zeros(self.nu)
        b = data.base
        self.base.calcDiff(b, x, u)
        # eigenpy hands (n, 1) matrices over as 1-D views: copy through [:] whatever the shape.
        data.Fx[:] = b.Fx
        data.Fu[:] = b.Fu
        data.Lx[:] = b.Lx
        data.Lu[:] = b.Lu
        data.Lxx[:] = b.Lxx
        data.Lxu[:] = b.Lxu
        data.Luu[:] = b.Luu
        if self.mu <= 0.0:
            return
        mu = self.mu
        if self.mode == "policy":
            assert self.policy is not None, "policy mode needs a policy"
            p, jac = self.policy.action_and_jacobian(self._z(x))
            pi_x = jac[:, : self.state.nx]
            r = u - p + self.lam / mu
            data.Lx[:] -= mu * (pi_x.T @ r)
            data.Lxx[:] += mu * (pi_x.T @ pi_x)
            data.Lxu[:] -= (mu * pi_x.T).reshape(data.Lxu.shape)
        else:
            r = u - self.u_ref + self.lam / mu
            data.Lx[:] += mu * (x - self.x_ref)
            data.Lxx[:] += mu * np.eye(self.state.ndx)
        data.Lu[:] += mu * r
        data.Luu[:] += (mu * np.eye(self.nu)).reshape(data.Luu.shape)
