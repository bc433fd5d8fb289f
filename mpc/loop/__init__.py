"""The closed loop: PyBullet plant, MPC controller, disturbances, hot swaps, logs and outputs.

* :mod:`.runner`: :class:`ClosedLoop`, which builds everything once and runs the ticks;
* :mod:`.hot_swap`: terminal swaps prepared off the control path;
* :mod:`.run_log`: arrays allocated before the loop; :mod:`.summary`: ``summary.json``;
* :mod:`.plots`: the PNGs of one run.
"""

from .hot_swap import SwapEvent, TerminalSwapper
from .run_log import RunLog
from .runner import ClosedLoop, builtin_terminal
from .summary import Recovery, RunResult, RunSummary, SolveStats

__all__ = [
    "ClosedLoop",
    "Recovery",
    "RunLog",
    "RunResult",
    "RunSummary",
    "SolveStats",
    "SwapEvent",
    "TerminalSwapper",
    "builtin_terminal",
]
