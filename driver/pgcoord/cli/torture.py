"""`pgcoord torture ...`: the fault torture, with options of its own (pgcoord torture
--help). The library never imports the demo: it is named here, and imported when the
command runs."""

from __future__ import annotations

from .command import Passthrough

COMMAND = Passthrough(
    "torture", "run the fault torture (see pgcoord torture --help)", "pgcoord.demo.torture"
)
