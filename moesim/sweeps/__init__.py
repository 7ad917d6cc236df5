"""Sweeps and what-if studies: grids of runs into a resumable Parquet dataset, locally or on Ray."""
