"""Routing traces, by concern:

- format/    the in-memory Trace (trace.py, trace_meta.py, trace_checks.py, build.py), moesim's Parquet
             files (parquet_*.py), loading and saving any format (io.py), the bundled traces
             (bundled.py; the files are in data/), `moesim traces info|convert|validate|formats`
- importers/ other tools' logs and files, one module per format (a registry in __init__.py), and the
             doctor that says when a log was imported wrong
- synth/     synthetic traces (synthetic.py, schedule.py, synth_config.py), fitting them to real ones
             (fit.py), token-indexed workloads (tol.py), `moesim traces synth|fit|stats|synth-tol`
- record/    recording a trace from a local Hugging Face checkpoint (`moesim record`)
- models/    the model catalog (the YAML files beside catalog.py), config.json and GGUF shapes
- stats/     trace statistics: popularity, predictability, reuse and working sets, the summary
cli_traces.py is the `moesim traces` command group.
"""
