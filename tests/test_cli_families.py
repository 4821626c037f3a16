"""The `mlgate` command families: each subcommand registered once, failures through one handler."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from gates.server import cli

SCHEMA_HINT = "is the schema current? Run `mlgate db upgrade`."


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def test_every_subcommand_is_registered_by_exactly_one_family() -> None:
    claimed = [name for family in cli.FAMILIES for name in family.commands]
    assert len(claimed) == len(set(claimed)), claimed
    assert sorted(claimed) == sorted(_subcommands(cli.build_parser()))


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "fraud"],
        ["pointer-at", "fraud", "Production"],
        ["gates", "list"],
        ["approvals", "list"],
        ["users", "list"],
        ["tokens", "list"],
        ["grants", "list"],
        ["audit", "verify"],
        ["subscriptions", "list"],
        ["verify", "models:/fraud/1"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_an_unmigrated_database_is_one_line_and_exit_1_in_every_family(
    make_database: Any, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    url = make_database("cli-families")
    assert cli.main([*argv, "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlgate: database error ("), err
    assert err.rstrip().endswith(SCHEMA_HINT), err
    assert len(err.strip().splitlines()) == 1, err


def test_a_backup_refusal_is_labelled_with_its_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backup", "--output", str(tmp_path / "b"), "--database-url", "postgresql://u@h/db"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlgate: backup: mlgate backup copies the embedded SQLite database"), err
    assert not (tmp_path / "b").exists()


def test_a_restore_of_a_folder_that_is_no_backup_is_labelled_with_its_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["restore", str(tmp_path), "--database-url", f"sqlite:///{tmp_path / 'new.db'}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mlgate: restore: {tmp_path} is not an mlgate backup"), err
    assert not (tmp_path / "new.db").exists()


def test_an_unreadable_checkpoint_is_labelled_as_a_checkpoint_error(
    make_database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = tmp_path / "latest.json"
    forged.write_text('{"format": "not a checkpoint"}\n')
    url = make_database("cli-checkpoint")
    assert cli.main(["audit", "verify", "--checkpoint", str(forged), "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlgate: checkpoint: 'seq' must be a non-negative integer"), err
    assert len(err.strip().splitlines()) == 1, err
