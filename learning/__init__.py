"""Offline learning of terminal values.

Shared by every algorithm, at this level: :mod:`.networks` (value networks),
:mod:`.datasets` (samples of V and its gradient), :mod:`.sobolev` (Sobolev regression),
:mod:`.export` (the artifact writer and its one metadata builder) and :mod:`.checkpoint`
(atomic checkpoints and resume). Algorithms live in subpackages (:mod:`learning.dvp`).

Depends on :mod:`mpc` (the OCP and the artifact contract) and :mod:`sim`; never on :mod:`vmpc`
(the import contract in pyproject.toml enforces it). Nothing is imported here: a DVP solver
worker imports ``learning.dvp.executors`` and must not pay ~2 s for torch, which only the fit
and the export need. Import from the modules, e.g. ``from learning.networks import
ResidualValueNet``.
"""
