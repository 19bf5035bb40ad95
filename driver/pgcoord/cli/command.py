"""What a command module declares: its name, its one-line help, its options and what it
runs (a Command), or the module whose own main(argv) takes the rest of the command line
(a Passthrough, like `pgcoord demo`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    """`pgcoord NAME ...`: `add_arguments` declares the options on the command's parser
    (types from .options, the database option from .database); `run` does the work and
    returns the exit status, raising UsageError or CommandError (from .errors) to stop
    with one line."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Passthrough:
    """`pgcoord NAME ARGS...` runs `main(ARGS)` of `module`, imported only then."""

    name: str
    help: str
    module: str
