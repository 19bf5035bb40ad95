"""The command line is a package with one module per command: every module defining a
COMMAND is registered in COMMANDS (a forgotten line would hide the command), once."""

from __future__ import annotations

import importlib
import pkgutil

import pgcoord.cli
from pgcoord.cli.command import Command, Passthrough
from pgcoord.cli.main import COMMANDS, build_parser, commands


def test_every_command_module_is_registered_once() -> None:
    defining = {
        info.name
        for info in pkgutil.iter_modules(pgcoord.cli.__path__)
        if not info.name.startswith("_")  # __main__ runs the command when imported
        and hasattr(importlib.import_module(f"pgcoord.cli.{info.name}"), "COMMAND")
    }
    assert sorted(COMMANDS) == sorted(defining)
    names = [command.name for command in commands()]
    assert len(set(names)) == len(names)
    assert all(isinstance(command, Command | Passthrough) for command in commands())


def test_the_help_lists_the_commands_in_their_order() -> None:
    listed = build_parser().format_help()
    positions = [listed.index(f"\n    {command.name} ") for command in commands()]
    assert positions == sorted(positions)
