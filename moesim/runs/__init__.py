"""Measured runs as data: read a real engine's per-step measurements, check moesim against them,
fit a profile's free figures from one of them (docs/fidelity.md shows the result).

    from moesim.runs.readers import read_run
    run = read_run("runs/gemma_base_ov.csv")          # steps table + configuration
    run.steps[["wall_s", "read_bytes", "hits"]], run.config.cache_mib, run.config.lanes
"""
