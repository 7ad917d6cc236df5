"""Synthetic traces: seeded MoE routing, fitting a synthetic trace to a real one, token-indexed workloads."""
