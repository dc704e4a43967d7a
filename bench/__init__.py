"""Benchmarks; run them as modules, e.g. `python -m bench.import_targets`."""
