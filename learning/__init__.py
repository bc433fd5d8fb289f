"""Offline learning of terminal values: networks, datasets, Sobolev regression, export.

Depends on :mod:`mpc` (the OCP and the artifact contract) and never the other way round.
"""

from .datasets import ValueDataset, action_model_dataset, quadratic_dataset
from .export import export_value
from .networks import FeedForwardValueNet, ResidualValueNet, make_value_net
from .sobolev import FitResult, SobolevFitSpec, fit_sobolev

__all__ = [
    "FeedForwardValueNet",
    "FitResult",
    "ResidualValueNet",
    "SobolevFitSpec",
    "ValueDataset",
    "action_model_dataset",
    "export_value",
    "fit_sobolev",
    "make_value_net",
    "quadratic_dataset",
]
