"""Crocoddyl models that Crocoddyl itself lacks, written as Python-derived models."""

from __future__ import annotations

import crocoddyl
import numpy as np

__all__ = ["JointSubsetActuation", "ZeroTerminal"]


class ZeroTerminal(crocoddyl.ActionModelAbstract):
    """A terminal knot with no cost (DVP's iteration 0)."""

    def __init__(self, state: crocoddyl.StateAbstract, nu: int) -> None:
        crocoddyl.ActionModelAbstract.__init__(self, state, nu)

    def calc(self, data, x, u=None):
        data.cost = 0.0
        data.xnext[:] = x

    def calcDiff(self, data, x, u=None):
        pass


class JointSubsetActuation(crocoddyl.ActuationModelAbstract):
    """tau = S u: the controls drive the listed velocity coordinates, the others are free
    (Crocoddyl's actuation models cover full and floating-base actuation, not this)."""

    def __init__(self, state: crocoddyl.StateMultibody, actuated: list[int]) -> None:
        crocoddyl.ActuationModelAbstract.__init__(self, state, len(actuated))
        self._idx = np.asarray(actuated, dtype=int)
        self._selection = np.zeros((state.nv, len(actuated)))  # [-] S
        self._selection[self._idx, np.arange(len(actuated))] = 1.0

    def calc(self, data, x, u=None):
        data.tau[:] = 0.0
        if u is not None:
            data.tau[self._idx] = u

    def calcDiff(self, data, x, u=None):
        if u is not None:
            # eigenpy hands an (nv, 1) matrix over as a 1-D view: write through its own shape.
            data.dtau_du[:] = self._selection.reshape(data.dtau_du.shape)

    def commands(self, data, x, tau):
        data.u[:] = tau[self._idx]

    def torqueTransform(self, data, x, u):
        data.Mtau[:] = self._selection.T.reshape(data.Mtau.shape)
