"""The ``cagcl-mini`` command: one parser tree, every subcommand documents its options."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import REPO

from cagcl_mini.cli.main import COMMANDS, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = _subparsers(parser)
    if not subs:
        yield path, parser
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def test_every_command_is_in_the_tree():
    assert set(_subparsers(build_parser())) == set(COMMANDS)
    bench = _subparsers(_subparsers(build_parser())["bench"])
    assert set(bench) == {"data", "reports", "pooling", "train", "claims", "probe"}


@pytest.mark.parametrize("path", [p for p, _ in _leaves(build_parser())], ids=lambda p: " ".join(p))
def test_every_subcommand_help_lists_its_options(path, capsys):
    leaf = dict(_leaves(build_parser()))[path]
    options = [o for a in leaf._actions for o in a.option_strings if o.startswith("--")]
    assert "--help" in options and len(options) > 1, path
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, f"`cagcl-mini {' '.join(path)} --help` does not list {option}"


def test_python_dash_m_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "cagcl_mini", "bench", "claims", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("usage: cagcl-mini bench claims") and "--seeds" in out


def test_a_mistyped_option_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--stpes", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --stpes" in capsys.readouterr().err
