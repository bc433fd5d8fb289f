"""Controller side of value-mpc: robot model, reaching OCP, MPC controller, closed loop, CLI.

Depends on :mod:`sim` (never the other way round).
"""

from .config import Config, load_config
from .controller import MPCController, SolveReport, SolveStatus
from .errors import ConfigError, FrameNotFound, JointNotFound, ModelError, VmpcError
from .ocp import NoTerminal, QuadraticTerminal, ReachingOCP, TerminalCost
from .robot_model import RobotModel
from .runner import ClosedLoop, RunResult

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
