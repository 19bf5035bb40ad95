"""Benchmarks of pgcoord against a real server (run them with scripts/bench)."""
