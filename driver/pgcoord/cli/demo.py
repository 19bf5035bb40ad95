"""`pgcoord demo ...`: the demo, with options of its own (pgcoord demo --help). The
library never imports the demo: it is named here, and imported when the command runs."""

from __future__ import annotations

from .command import Passthrough

COMMAND = Passthrough("demo", "run the demo (see pgcoord demo --help)", "pgcoord.demo.main")
