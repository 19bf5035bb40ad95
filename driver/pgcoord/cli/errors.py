"""The two ways a command fails, each shown as one line: a usage error (exit status 2)
and a runtime error (exit status 1); and how values and messages are put on that line."""

from __future__ import annotations

# exit statuses, the same for every command (0 when it went well)
FAILED = 1  # a runtime error, or the reader of the output went away
USAGE = 2  # bad usage: an option, an argument, the database URL
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

SHOWN_WIDTH = 40  # characters of a value shown in a message; longer ones are cut


class UsageError(Exception):
    """Bad usage that the parser cannot see (exit status 2)."""


class CommandError(Exception):
    """The command failed for a reason worth one line (exit status 1)."""


def shown(value: str) -> str:
    """A value as a message shows it: quoted, so an empty one reads '', escaped, so it
    stays on one line, and cut after SHOWN_WIDTH characters, marked by ... outside the
    quotes."""
    if len(value) <= SHOWN_WIDTH:
        return repr(value)
    return f"{value[:SHOWN_WIDTH]!r}..."


def one_line(exc: BaseException) -> str:
    """A message on one line (libpq's and the server's span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__
