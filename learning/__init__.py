"""Offline learning of terminal values: networks, datasets, Sobolev regression, export,
checkpoints (this level, shared by every algorithm) and the algorithms in subpackages
(:mod:`learning.dvp`).

Depends on :mod:`mpc` (the OCP and the artifact contract) and :mod:`sim`; never on :mod:`vmpc`
(the import contract in pyproject.toml enforces it).
"""

from .datasets import ValueDataset, action_model_dataset, quadratic_dataset
from .export import build_metadata, export_value
from .networks import FeedForwardValueNet, ResidualValueNet, make_value_net
from .sobolev import FitResult, SobolevFitSpec, fit_sobolev

__all__ = [
    "FeedForwardValueNet",
    "FitResult",
    "ResidualValueNet",
    "SobolevFitSpec",
    "ValueDataset",
    "action_model_dataset",
    "build_metadata",
    "export_value",
    "fit_sobolev",
    "make_value_net",
    "quadratic_dataset",
]
