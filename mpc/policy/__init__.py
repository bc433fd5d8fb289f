"""Learned warm-start policies: the numpy evaluator of a policy network (:mod:`.evaluator`),
shared by the trainers in :mod:`learning` and by the MPC that starts from a policy's rollout,
and the policy artifact (:mod:`.artifact`, the whole of its API), the file learning/ writes and
mpc/ loads without running any of it."""

from .artifact import (
    POLICY_FORMAT,
    ControlBox,
    PolicyMetadata,
    PolicyModel,
    PolicyModelError,
    load_policy_model,
    read_policy_metadata,
)
from .evaluator import ACTIVATIONS, PolicyEvaluator

__all__ = [
    "ACTIVATIONS",
    "POLICY_FORMAT",
    "ControlBox",
    "PolicyEvaluator",
    "PolicyMetadata",
    "PolicyModel",
    "PolicyModelError",
    "load_policy_model",
    "read_policy_metadata",
]
