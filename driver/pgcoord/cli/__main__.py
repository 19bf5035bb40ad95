"""`python -m pgcoord.cli`: the pgcoord command."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
