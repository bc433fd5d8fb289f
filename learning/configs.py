"""What the training configs of every algorithm share: comparing a run's stored config with the
one a ``--resume`` brings (light: no torch, so config loading stays fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mpc.errors import ConfigError

__all__ = ["config_differences", "prepare_system", "resolve_arm_config"]


def prepare_system(raw: dict[str, Any], path: Path, kinds: tuple[str, ...]) -> None:
    """Before validation: name an unknown ``system.kind`` plainly (with the known ones), and
    resolve an arm's MPC config against the training config's folder when it is not found from
    the working directory."""
    system = raw.get("system")
    if not isinstance(system, dict):
        return
    if system.get("kind") not in kinds:
        raise ConfigError(
            str(path), "system.kind", f"unknown system {system.get('kind')!r} ({' | '.join(kinds)})"
        )
    resolve_arm_config(system, path)


def resolve_arm_config(section: dict[str, Any], path: Path) -> None:
    """An arm's MPC config (``section["config"]``) is found from the working directory, or else
    from the training config's folder."""
    if section.get("kind") == "arm" and isinstance(section.get("config"), str):
        cfg_path = Path(section["config"])
        if not cfg_path.is_absolute() and not cfg_path.exists():
            section["config"] = str((path.parent / cfg_path).resolve())


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(raw, dict) and (raw or not prefix):
        out: dict[str, Any] = {}
        for k, v in raw.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: raw}


def config_differences(
    stored: dict[str, Any], current: dict[str, Any], may_differ: tuple[str, ...]
) -> list[str]:
    """The dotted keys (with old and new values) where two resolved configs differ, leaving out
    those matching ``may_differ`` (exact keys, or ``section.*``)."""
    old, new = _flatten(stored), _flatten(current)
    missing = object()

    def exempt(key: str) -> bool:
        return any(key == m or (m.endswith(".*") and key.startswith(m[:-1])) for m in may_differ)

    out = []
    for key in sorted(old.keys() | new.keys()):
        if exempt(key):
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show = lambda v: "unset" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key} ({show(a)} -> {show(b)})")
    return out
