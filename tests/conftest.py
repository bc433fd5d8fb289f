from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
IIWA = CONFIGS / "iiwa_reach.yaml"
PANDA = CONFIGS / "panda_reach.yaml"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_configuration(
    rng: np.random.Generator, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Uniform within the inner 80% of the joint range, so no limit constraint is active."""
    lo, hi = np.maximum(lower, -3.0), np.minimum(upper, 3.0)
    margin = 0.1 * (hi - lo)
    return rng.uniform(lo + margin, hi - margin)
