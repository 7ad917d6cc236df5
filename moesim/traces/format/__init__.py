"""The trace format: the in-memory Trace, moesim's Parquet files, loading and saving, bundled traces."""
