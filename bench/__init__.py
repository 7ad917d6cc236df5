"""Benchmarks: ratios measured side by side in one run (shared machines drift), never timed unit tests."""
