"""Offline learning of terminal values and warm-start policies (later issues).

Depends on :mod:`mpc` (it reuses mpc's OCP) and never the other way round.
"""

__all__: list[str] = []
