"""Benchmarks for personasync: run as modules, never collected by the default pytest run."""
