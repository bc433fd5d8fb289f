"""Controller side of value-mpc: robot model, reaching OCP, MPC controller, closed loop, CLI.

Depends on :mod:`sim` (never the other way round).
"""

import importlib
from typing import Any

# Lazy: `import mpc.bridge.client` (or any small module) must not pay for Crocoddyl,
# Pinocchio and PyBullet.
_EXPORTS = {
    "ClosedLoop": "runner", "RunResult": "runner", "Config": "config", "load_config": "config",
    "MPCController": "controller", "SolveReport": "controller", "SolveStatus": "controller",
    "ConfigError": "errors", "FrameNotFound": "errors", "JointNotFound": "errors",
    "ModelError": "errors", "VmpcError": "errors", "NoTerminal": "ocp",
    "QuadraticTerminal": "ocp", "ReachingOCP": "ocp", "TerminalCost": "ocp",
    "RobotModel": "robot_model",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mpc' has no attribute {name!r}")


__all__ = [
    "ClosedLoop",
    "Config",
    "ConfigError",
    "FrameNotFound",
    "JointNotFound",
    "MPCController",
    "ModelError",
    "NoTerminal",
    "QuadraticTerminal",
    "ReachingOCP",
    "RobotModel",
    "RunResult",
    "SolveReport",
    "SolveStatus",
    "TerminalCost",
    "VmpcError",
    "load_config",
]
