"""Every verb's ``--help`` renders (in-process): a broken usage line is a crash a user meets
first (a tuple metavar on a positional did exactly that to ``vmpc target --help``)."""

from __future__ import annotations

import argparse

import pytest

from vmpc.cli import build_parser, main


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _verbs(sub, (*path, name))
    return out


VERBS = _verbs(build_parser())


def test_every_verb_group_is_there():
    names = {v[0] for v in VERBS if v}
    assert {"sim", "value", "train", "eval", "bench", "watch", "swap", "keys"} <= names
    assert len(VERBS) > 20


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v) or "vmpc")
def test_help_renders(verb: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: vmpc{' ' if verb else ''}{' '.join(verb)}")
