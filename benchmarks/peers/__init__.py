"""Peers run side by side with personasync by `python -m benchmarks run` (scenario ``peers``)."""
