"""A learned value V(x, theta) as Crocoddyl's terminal cost.

Two evaluators compute the same thing: the TorchScript module itself, and a lean float64 numpy
path built from the artifact's weights (``value.evaluator: fast``, the default). The fast path
folds the input normalisation into the first layer, the task parameters into its bias (updated
only when the target moves) and sqrt(2) into the output layer, and calcDiff reuses the forward
pass that calc already did at the same x. tests/test_value_terminal.py proves parity <= 1e-10.

The terminal model writes into Crocoddyl's buffers in place (Lxx is column-major, so its
transpose is the C-ordered view ``np.dot`` can write into; it is symmetric).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crocoddyl
import numpy as np

from ..config import Config
from ..errors import SwapRefused
from ..ocp import PreparedTerminal, ReachingOCP, TerminalCost
from .artifact import (
    TARGET_PARAMS,
    ValueModel,
    ValueModelError,
    check_task,
    load_value_model,
)
from .feature_evaluator import FeatureResidualEvaluator, needs_features

__all__ = [
    "FastResidualEvaluator",
    "FastFeedForwardEvaluator",
    "TorchScriptEvaluator",
    "ValueTerminalModel",
    "LearnedValueTerminal",
    "make_evaluator",
    "check_compatible",
    "prepare_value_terminal",
    "install_validated_value",
    "validation_states",
    "value_bases",
]

SQRT2 = math.sqrt(2.0)


class _FastBase:
    """Shared weight folding of both network kinds (see module docstring).

    Numpy's per-call overhead dominates at these sizes, so the layout minimises calls: biases
    ride in an extra column of each weight matrix against a constant 1 appended to each layer's
    input, and all hidden activations live in one buffer so tanh' of every layer is two calls.
    """

    def __init__(self, model: ValueModel) -> None:
        a, meta = model.arrays, model.metadata
        nx, hidden = meta.state.nx, meta.architecture.hidden
        with np.errstate(all="ignore"):  # a degenerate model is caught by the warm-up check
            inv_std = 1.0 / a["in_std"]
            w1 = a["layers.0.weight"] * inv_std[None, :]
            self.b1 = a["layers.0.bias"] - w1 @ a["in_mean"]
        self.nx = nx
        self.w1x = np.ascontiguousarray(w1[:, :nx])
        self.w1t = np.ascontiguousarray(w1[:, nx:])
        # Augmented first layer [W1_x | b1 + W1_theta theta] against [x, 1].
        self.w1_aug = np.hstack([self.w1x, self.b1[:, None]])
        self.x_aug = np.ones(nx + 1)
        # One buffer [h_0, 1, h_1, 1, ..., h_L-1, 1]; h_l are views into it.
        offsets = np.cumsum([0] + [h + 1 for h in hidden])
        self.hbuf = np.ones(offsets[-1])
        self.dbuf = np.zeros(offsets[-1])  # 1 - h^2 (0 at the constant slots)
        self.h_aug = [self.hbuf[o : o + h + 1] for o, h in zip(offsets, hidden, strict=False)]
        self.hs = [self.hbuf[o : o + h] for o, h in zip(offsets, hidden, strict=False)]
        self.ds = [self.dbuf[o : o + h] for o, h in zip(offsets, hidden, strict=False)]
        self.ws = [np.ascontiguousarray(a[f"layers.{i}.weight"]) for i in range(1, len(hidden))]
        self.ws_aug = [
            np.hstack([w, a[f"layers.{i}.bias"][:, None]]) for i, w in enumerate(self.ws, start=1)
        ]
        self._x_key = b""  # bytes of the x the buffers hold, b"" when none
        self._value = 0.0
        self.theta = np.zeros(len(meta.task_params))

    def set_params(self, theta: np.ndarray) -> None:
        self.theta[:] = theta
        self.w1_aug[:, -1] = self.b1 + self.w1t @ self.theta
        self._x_key = b""

    def _trunk(self, x: np.ndarray) -> np.ndarray:
        """Hidden layers; returns the last layer's [h, 1]."""
        self.x_aug[: self.nx] = x
        inp, w = self.x_aug, self.w1_aug
        for i, h in enumerate(self.hs):
            np.dot(w, inp, out=h)
            np.tanh(h, out=h)
            inp = self.h_aug[i]
            if i < len(self.ws_aug):
                w = self.ws_aug[i]
        return inp

    def invalidate(self) -> None:
        """Forget the cached forward pass (timing a full evaluation)."""
        self._x_key = b""

    def _forward_if_needed(self, x: np.ndarray) -> None:
        if x.tobytes() != self._x_key:
            self.calc(x)

    def _fill_ds(self) -> None:
        np.multiply(self.hbuf, self.hbuf, out=self.dbuf)
        np.subtract(1.0, self.dbuf, out=self.dbuf)

    def calc(self, x: np.ndarray) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class FastResidualEvaluator(_FastBase):
    def __init__(self, model: ValueModel) -> None:
        super().__init__(model)
        a = model.arrays
        # r~ = sqrt(2) r, so V = r~.r~ / 2, Lx = J~^T r~ and Lxx = J~^T J~.
        self.wo = SQRT2 * a["out.weight"]
        self.wo_aug = np.hstack([self.wo, SQRT2 * a["out.bias"][:, None]])
        m = self.wo.shape[0]
        self.r = np.zeros(m)
        self._rev = [np.zeros((m, h)) for h in model.metadata.architecture.hidden]
        self._jx = np.zeros((m, self.nx))

    def calc(self, x: np.ndarray) -> float:
        # A warm-started FDDP iteration starts by evaluating the state its previous forward pass
        # ended at: answer that from the cache.
        key = x.tobytes()
        if key == self._x_key:
            return self._value
        np.dot(self.wo_aug, self._trunk(x), out=self.r)
        self._x_key = key
        self._value = 0.5 * float(np.dot(self.r, self.r))
        return self._value

    def calc_diff(self, x: np.ndarray, lx_out: np.ndarray, lxx_out_t: np.ndarray) -> None:
        """Gradient into lx_out, Gauss-Newton Hessian into lxx_out_t (C-ordered, symmetric)."""
        self._forward_if_needed(x)
        self._fill_ds()
        n = len(self.hs)
        rev = self._rev[n - 1]
        np.multiply(self.wo, self.ds[n - 1], out=rev)
        for i in range(n - 1, 0, -1):
            nxt = self._rev[i - 1]
            np.dot(rev, self.ws[i - 1], out=nxt)
            nxt *= self.ds[i - 1]
            rev = nxt
        np.dot(rev, self.w1x, out=self._jx)
        np.dot(self.r, self._jx, out=lx_out)
        np.dot(self._jx.T, self._jx, out=lxx_out_t)


class FastFeedForwardEvaluator(_FastBase):
    def __init__(self, model: ValueModel) -> None:
        super().__init__(model)
        a = model.arrays
        self.wo = a["out.weight"][0].copy()
        self.bo = float(a["out.bias"][0])
        hidden = model.metadata.architecture.hidden
        self._a = [np.zeros((h, self.nx)) for h in hidden]  # d a_l / dx
        self._j = [np.zeros((h, self.nx)) for h in hidden]  # d h_l / dx
        self._g = [np.zeros(h) for h in hidden]
        self._tmp = [np.zeros((h, self.nx)) for h in hidden]

    def calc(self, x: np.ndarray) -> float:
        key = x.tobytes()
        if key == self._x_key:
            return self._value
        self._value = float(np.dot(self.wo, self._trunk(x)[:-1])) + self.bo
        self._x_key = key
        return self._value

    def calc_diff(self, x: np.ndarray, lx_out: np.ndarray, lxx_out_t: np.ndarray) -> None:
        """Exact gradient and Hessian: sum_l A_l^T diag(g_l tanh''(a_l)) A_l."""
        self._forward_if_needed(x)
        self._fill_ds()
        n = len(self.hs)
        self._a[0][:] = self.w1x
        for i in range(n):
            if i > 0:
                np.dot(self.ws[i - 1], self._j[i - 1], out=self._a[i])
            np.multiply(self._a[i], self.ds[i][:, None], out=self._j[i])
        g = self.wo
        lxx_out_t[:] = 0.0
        for i in range(n - 1, -1, -1):
            h, d, a_jac, tmp = self.hs[i], self.ds[i], self._a[i], self._tmp[i]
            coef = -2.0 * g * h * d  # dV/dh * tanh''
            np.multiply(a_jac, coef[:, None], out=tmp)
            lxx_out_t += a_jac.T @ tmp
            delta = self._g[i]
            np.multiply(g, d, out=delta)
            if i > 0:
                g = self.ws[i - 1].T @ delta
            else:
                np.dot(delta, self.w1x, out=lx_out)


class TorchScriptEvaluator:
    """The artifact's own TorchScript methods (slower; the reference the fast path is held to)."""

    def __init__(self, model: ValueModel) -> None:
        import torch

        self._torch = torch
        self.module = model.module
        self.nx = model.metadata.state.nx
        self.z = torch.zeros(model.metadata.architecture.n_in, dtype=torch.float64)
        self.theta = np.zeros(len(model.metadata.task_params))

    def set_params(self, theta: np.ndarray) -> None:
        self.theta[:] = theta
        self.z[self.nx :] = self._torch.from_numpy(self.theta)

    def invalidate(self) -> None:
        pass

    def calc(self, x: np.ndarray) -> float:
        self.z[: self.nx] = self._torch.from_numpy(np.asarray(x, dtype=np.float64))
        with self._torch.no_grad():
            return float(self.module(self.z.unsqueeze(0))[0])

    def calc_diff(self, x: np.ndarray, lx_out: np.ndarray, lxx_out_t: np.ndarray) -> None:
        self.z[: self.nx] = self._torch.from_numpy(np.asarray(x, dtype=np.float64))
        with self._torch.no_grad():
            _, g, h = self.module.value_and_derivatives(self.z)
        nx = self.nx
        lx_out[:] = g.numpy()[:nx]
        lxx_out_t[:] = h.numpy()[:nx, :nx]


def make_evaluator(model: ValueModel, kind: str, robot: Any = None) -> Any:
    """The evaluator of ``model``: ``fast`` (numpy) or ``torchscript``; a model with input
    features or the goal-zero residual needs the robot (its Pinocchio model and EE frame)."""
    if needs_features(model):
        return FeatureResidualEvaluator(model, robot, kind)
    if kind == "torchscript":
        return TorchScriptEvaluator(model)
    if model.metadata.architecture.kind == "residual":
        return FastResidualEvaluator(model)
    return FastFeedForwardEvaluator(model)


class ValueTerminalModel(crocoddyl.ActionModelAbstract):
    """Terminal knot whose cost is the learned value (u is ignored; u=None at the terminal)."""

    def __init__(self, state: crocoddyl.StateAbstract, nu: int, evaluator: Any) -> None:
        crocoddyl.ActionModelAbstract.__init__(self, state, nu)
        self.evaluator = evaluator
        # Evaluations that went non-finite at a finite state (a diverged rollout's inf state
        # is the solver's failure, not the value's).
        self.nonfinite_evaluations = 0

    def calc(self, data, x, u=None):
        value = self.evaluator.calc(x)
        data.cost = value
        data.xnext[:] = x
        if not math.isfinite(value) and np.isfinite(x).all():
            self.nonfinite_evaluations += 1

    def calcDiff(self, data, x, u=None):
        lx = data.Lx
        self.evaluator.calc_diff(x, lx, data.Lxx.T)
        if not math.isfinite(float(np.dot(lx, lx))) and np.isfinite(x).all():
            self.nonfinite_evaluations += 1


class LearnedValueTerminal(TerminalCost):
    """A value artifact ending the horizon; passes the current target when conditioned on it."""

    def __init__(self, model: ValueModel, evaluator_kind: str = "fast") -> None:
        self.model = model
        self.label = model.model_id
        self.evaluator_kind = evaluator_kind
        self._uses_target = model.metadata.target_conditioned
        self._uses_goal = needs_features(model)
        self._evaluators: list[Any] = []
        self._models: list[ValueTerminalModel] = []

    def make_model(self, ocp: ReachingOCP) -> crocoddyl.ActionModelAbstract:
        ev = make_evaluator(self.model, self.evaluator_kind, ocp.robot)
        if self._uses_target:
            ev.set_params(ocp.target)
        if self._uses_goal:
            ev.set_goal(ocp.target)
        self._evaluators.append(ev)
        croc = ValueTerminalModel(ocp.state, ocp.nu, ev)
        self._models.append(croc)
        return croc

    def broken(self) -> bool:
        return any(m.nonfinite_evaluations for m in self._models)

    def set_target(self, target: np.ndarray) -> None:
        for ev in self._evaluators:
            if self._uses_target:
                ev.set_params(target)
            if self._uses_goal:
                ev.set_goal(target)


def check_compatible(model: ValueModel, cfg: Config, ocp: ReachingOCP) -> str | None:
    """Raise on a model that cannot serve this task; return the fingerprint-mismatch message
    (which a forced swap may override) or None (:func:`~mpc.value.artifact.check_task`)."""
    return check_task(model, cfg, ocp.nx, ocp.robot.joint_names)


def value_bases(cfg: Config) -> list[Path]:
    """Where relative ``value.allowed_dirs`` entries resolve: the config file's folder only, so
    the folder a model may come from does not depend on where a command is run."""
    return [cfg.base_dir.resolve()]


# Spread of the validation states around the current one when the artifact records no state
# box: within the joint limits in q, +-V_SPREAD in v.
Q_SPREAD, V_SPREAD = 0.5, 1.0


def validation_states(
    model: ValueModel, x: np.ndarray, ocp: ReachingOCP, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """n states (and task parameters, for a target-conditioned value) to validate a value on:
    in the recorded training box, else around ``x`` within the joint limits."""
    rng = np.random.default_rng(seed)
    trained, nq = model.metadata.trained, ocp.nx // 2
    if trained.state_box is not None and len(trained.state_box[0]) == ocp.nx:
        lo, hi = (np.asarray(b, dtype=float) for b in trained.state_box)
        xs = rng.uniform(lo, hi, (n, ocp.nx))
    else:
        ql, qu = np.asarray(ocp.robot.q_lower), np.asarray(ocp.robot.q_upper)
        q = np.clip(x[:nq] + rng.uniform(-Q_SPREAD, Q_SPREAD, (n, nq)), ql, qu)
        v = x[nq:] + rng.uniform(-V_SPREAD, V_SPREAD, (n, nq))
        xs = np.hstack([q, v])
    thetas = None
    if model.metadata.target_conditioned:
        box = trained.task_box
        if box is not None and len(box[0]) == len(TARGET_PARAMS):
            thetas = rng.uniform(box[0], box[1], (n, len(TARGET_PARAMS)))
        else:
            thetas = np.repeat(np.asarray(ocp.target, dtype=float)[None, :], n, axis=0)
    return xs, thetas


def _bad(cost: float, lx: np.ndarray, lxx: np.ndarray, bound: float) -> str | None:
    if not (math.isfinite(cost) and np.isfinite(lx).all() and np.isfinite(lxx).all()):
        return "not finite"
    worst = max(abs(cost), float(np.abs(lx).max(initial=0.0)), float(np.abs(lxx).max(initial=0.0)))
    if worst > bound:
        return f"over the {bound:g} bound (|V|, |Vx| or |Vxx| = {worst:.3g}; value.max_abs_value)"
    return None


def _no_check() -> None:
    pass


def _built(
    model: ValueModel, kind: str, ocp: ReachingOCP
) -> tuple[LearnedValueTerminal, ValueTerminalModel, Any]:
    """The terminal of ``model`` for ``ocp``, its Crocoddyl model (on ``ocp``'s target) and a
    data to evaluate it with."""
    term = LearnedValueTerminal(model, kind)
    croc = term.make_model(ocp)
    term.set_target(ocp.target)
    return term, croc, croc.createData()


def _evaluate(croc: ValueTerminalModel, data: Any, x: np.ndarray, bound: float) -> str | None:
    """A full calc + calcDiff at x (no cache hit); what is wrong with V, Vx or Vxx, or None."""
    croc.evaluator.invalidate()
    with np.errstate(all="ignore"):
        croc.calc(data, x)
        croc.calcDiff(data, x)
    return _bad(data.cost, data.Lx, data.Lxx, bound)


def prepare_value_terminal(
    spec: Path,
    force: bool,
    x: np.ndarray,
    cfg: Config,
    ocp: ReachingOCP,
    warmups: int = 5,
    check: Callable[[], None] = _no_check,
) -> PreparedTerminal:
    """Load, validate, build and warm up a value terminal; raise SwapRefused with the reason.

    The default (fast) evaluator runs nothing from the file; ``value.evaluator: torchscript``
    loads the module only for a trusted file. The value, gradient and Hessian must be finite
    and within ``value.max_abs_value`` at the current state and at ``value.validation_states``
    states sampled in the artifact's training box (or around the current state).
    ``check()`` runs between stages (a swap's deadline: it raises SwapRefused once time is up)."""
    torchscript = cfg.value.evaluator == "torchscript"
    try:
        model = load_value_model(
            spec,
            cfg.value.allowed_dirs,
            value_bases(cfg),
            trusted_sha256=cfg.value.trusted_sha256,
            module=torchscript,
        )
        mismatch = check_compatible(model, cfg, ocp)
    except ValueModelError as exc:
        raise SwapRefused(str(exc)) from None
    check()
    note = ""
    if mismatch is not None:
        if not force:
            raise SwapRefused(f"{spec}: {mismatch}; use force to swap anyway")
        note = f"forced: {mismatch}"
    term, croc, data = _built(model, cfg.value.evaluator, ocp)
    bound = cfg.value.max_abs_value
    times = []
    for _ in range(warmups):
        # CPU time of this thread: the swap worker shares the GIL with a running loop, and the
        # wall time of a call would count the waits for it (a spurious refusal under load).
        t0 = time.thread_time()
        bad = _evaluate(croc, data, x, bound)
        times.append(time.thread_time() - t0)
        if bad == "not finite":
            raise SwapRefused(
                f"{spec}: the value is not finite at the current state (V={data.cost})"
            )
        if bad is not None:
            raise SwapRefused(f"{spec}: the value at the current state is {bad}")
    call_us = float(np.median(times) * 1e6)
    if call_us > cfg.value.max_call_us:
        raise SwapRefused(
            f"{spec}: one calc+calcDiff takes {call_us:.0f} us, over the "
            f"{cfg.value.max_call_us:.0f} us budget (value.max_call_us)"
        )
    xs, thetas = validation_states(model, x, ocp, cfg.value.validation_states)
    ev = croc.evaluator
    try:
        for k, xk in enumerate(xs):
            check()
            if thetas is not None:
                ev.set_params(thetas[k])
            bad = _evaluate(croc, data, xk, bound)
            if bad is not None:
                where = "the training box" if model.metadata.trained.state_box else "around x"
                raise SwapRefused(
                    f"{spec}: the value is {bad} at validation state {k + 1} of {len(xs)} "
                    f"(sampled in {where}; V={data.cost:.3g})"
                )
    finally:
        term.set_target(ocp.target)
        ev.invalidate()
    return PreparedTerminal(term, croc, model.model_id, note)


def install_validated_value(
    model: ValueModel, note: str, x: np.ndarray, cfg: Config, ocp: ReachingOCP
) -> PreparedTerminal:
    """Build the terminal of a model :func:`prepare_value_terminal` already accepted (in the
    swap process, with the same weights and task): no validation again, only the one
    evaluation at ``x`` that makes the first solve find warm buffers, and that must be finite."""
    term, croc, data = _built(model, "fast", ocp)
    bad = _evaluate(croc, data, x, cfg.value.max_abs_value)
    if bad is not None:
        raise SwapRefused(f"{model.path}: the value at the current state is {bad}")
    return PreparedTerminal(term, croc, model.model_id, note)
