"""Progress bars that appear only on a terminal.

tqdm redraws on every update when stdout is a pipe or a file, so a piped ``vmpc train dvp``
wrote thousands of bar lines. Every long job makes its bar here: shown on a terminal, silent
otherwise (commands print one line per iteration or stage instead).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Any = None, *, enabled: bool = True, leave: bool = False, **kwargs: Any
) -> tqdm:
    """A tqdm bar (``kwargs`` go to tqdm), disabled unless ``enabled`` and stderr, where tqdm
    draws, is a terminal."""
    show = enabled and sys.stderr.isatty()
    return tqdm(iterable, disable=not show, leave=leave, **kwargs)
