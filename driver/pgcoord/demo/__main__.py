"""`python -m pgcoord.demo`: run the demo."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
