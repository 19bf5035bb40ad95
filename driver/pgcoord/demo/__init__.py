"""The demo (`pgcoord demo`, `python -m pgcoord.demo`, `scripts/demo`): pgcoord's lease
locks and inbox at work on a real PostgreSQL server, every step checked.

The library never imports this package (tests/test_layering.py).
"""
