"""The `pgcoord` command (console script `pgcoord`, or `python -m pgcoord.cli`).

    pgcoord migrate   [--database-url URL] [--to VERSION]
    pgcoord status    [--database-url URL]
    pgcoord campaigns [--run RUN_ID] [--database-url URL]
    pgcoord watch     RUN_ID [--interval SECONDS] [--database-url URL]
    pgcoord revive    CONVERSATION [--database-url URL]
    pgcoord work      HANDLER [--database-url URL] [--concurrency N] [--lease SECONDS]
                      [--timeout SECONDS] [--retry-in SECONDS] [--grace SECONDS]
                      [--name NAME] [--rate-key KEY --rate RATE --burst N]
                      [--listen URL | --no-listen]
    pgcoord work      --campaign HANDLER [the options above but --retry-in]
                      [--run-id RUN_ID] [--batch N] [--skip-stale-every SECONDS]
    pgcoord maintain  [--older-than SECONDS] [--database-url URL]
    pgcoord version   [--database-url URL]
    pgcoord demo ...                      (options of its own: pgcoord demo --help)

--database-url defaults to $DATABASE_URL. Exit status, the same for every command:
0 done (for `work`: stopped by SIGTERM or SIGINT, its batches finished or given back;
for `watch`: the run has nothing left to send, or was cancelled or marked finished);
1 failed, the reason printed on one line, or the reader of the output went away
(`pgcoord status | head -1` stops quietly); 2 bad usage, on one line naming the option,
the argument or the database URL; 130 interrupted by Ctrl-C (`watch`, which is stopped
that way, says nothing more). No input shows a traceback.

The package, one idea per module:

    main      the parser, the dispatch, and the one place failures become exit statuses
    command   what a command module declares: Command or Passthrough
    options   the one-line parser and the checked option types, with the SQL's ranges
    database  --database-url / DATABASE_URL, and a connection failing on one line
    errors    UsageError (2), CommandError (1), the exit statuses, values in messages
    tables    how values read in the output: tables, times, counts, durations, progress
    migrate, status, campaigns, watch, revive, work, maintain, version, demo: one module
              per command

A new command is one module and one line: write `cli/<name>.py` defining
`COMMAND = Command(name, help, add_arguments, run)`, where `add_arguments(parser)` declares
its options (numbers and durations through the types of `options`, whose range is the
SQL argument's; the database through `database.add_option`; no option's dest may be
`run`, the attribute that holds the command's run) and `run(args)` returns the
exit status, connecting through `database.connect(args)` and raising UsageError or
CommandError to stop with one line. Then add its name to COMMANDS in `main.py`, in the
order of `pgcoord --help`. A command group adds subparsers of its own in add_arguments
and sets `run` on each (`parser.set_defaults(run=...)`). A command with a parser of its
own is `COMMAND = Passthrough(name, help, "its.module")`, whose main(argv) is called with
the rest of the command line.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
