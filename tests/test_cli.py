"""The `mpm` command assembles every command group and reports errors in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mpm.cli import COMMAND_MODULES, build_parser, main


def test_every_command_group_registers() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"fetch", "prepare", "synth", "train-demo", "eval", "bench", "track", "tables"} <= set(choices)
    assert len(COMMAND_MODULES) == 8


def test_errors_are_one_line_with_status_2(tmp_path, capsys) -> None:
    rc = main(["eval", "--data-root", str(tmp_path), "--dataset", "ade20k", "--checkpoint",
               str(tmp_path / "missing.pth"), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mpm eval: error:")


def test_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "mpm.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mpm ")


@pytest.mark.parametrize("argv", [["fetch", "list"], ["bench", "--list-targets"]])
def test_listing_commands(argv, capsys) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()
