"""Controller side of value-mpc: robot model, reaching OCP, MPC controller and closed loop.

Depends on :mod:`sim` only; :mod:`learning` and :mod:`vmpc` build on it, never the other way
round (the import contract in pyproject.toml enforces it).

Subpackages: :mod:`mpc.loop` (the closed loop, hot swaps, run log, summary, plots),
:mod:`mpc.value` (the value-model artifact and the learned terminal) and :mod:`mpc.bridge`
(ZeroMQ). This top level exports only the light pieces (errors and config), so that
``import mpc.bridge.client`` does not pay for Crocoddyl, Pinocchio and PyBullet.
"""

from .config import Config, dump_config, load_config
from .errors import ConfigError, FrameNotFound, JointNotFound, ModelError, SwapRefused, VmpcError

__all__ = [
    "Config",
    "ConfigError",
    "FrameNotFound",
    "JointNotFound",
    "ModelError",
    "SwapRefused",
    "VmpcError",
    "dump_config",
    "load_config",
]
