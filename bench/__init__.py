"""Benchmarks: scripts that print numbers (``python -m bench.api``), not timed tests."""
