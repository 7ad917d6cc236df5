"""The O_DIRECT padding rule: whole 4 KiB blocks per tensor slice, checked by hand and on qwen.metrics."""

from __future__ import annotations

import numpy as np

from moesim.runs.padding import expected_read_bytes, slice_read_bytes, slices_for
from moesim.runs.readers import read_run
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE


def test_slice_reads_cover_whole_blocks() -> None:
    assert slice_read_bytes(0, 4096).item() == 4096  # aligned, whole block: no padding
    assert slice_read_bytes(32, 4096).item() == 8192  # unaligned start: one extra block
    assert slice_read_bytes(4000, 100).item() == 8192  # straddles a boundary
    assert slice_read_bytes(2048, 2048).item() == 4096
    assert slice_read_bytes(100, 0).item() == 0
    # a 1.5-block slice pays 0.5 or 1.5 blocks by start; uniformly over 32-byte starts the mean is one block
    starts = np.arange(0, 4096, 32)
    pad = slice_read_bytes(starts, 6144) - 6144
    assert set(pad.tolist()) == {2048, 6144}
    assert abs(pad.mean() - 4096) <= 32


def test_expected_rule_is_one_block_per_slice() -> None:
    assert expected_read_bytes(np.array([2654208, 0]), 3).tolist() == [2654208 + 3 * 4096, 0]
    assert slices_for("gemma4") == 2 and slices_for("qwen3moe") == 3 and slices_for(None) == 3


def test_qwen_decode_bytes_match_the_engine_after_padding() -> None:
    """The engine's own misses (residency 0), each padded by 3 x 4096, against read_bytes per step."""
    run = read_run("bundled:qwen")
    trace = load_trace("bundled:qwen")
    miss = trace.annotations["engine_residency"] == 0
    nbytes = expected_read_bytes(trace.object_bytes_array()[trace.object_ids()[miss]], 3).astype(float)
    per_pass = np.bincount(trace.cell_pass()[trace.access_cell()[miss]], weights=nbytes, minlength=trace.n_passes)
    diff = per_pass[trace.pass_phase == DECODE] - run.steps["read_bytes"].to_numpy()
    assert (diff == 0).sum() >= 127  # one step of 128 differs by 512 bytes (0.0001 % of it)
    assert np.abs(diff).max() <= 512
    # without the padding each step is short by exactly 12 KiB per read
    raw = np.bincount(trace.cell_pass()[trace.access_cell()[miss]],
                      weights=trace.object_bytes_array()[trace.object_ids()[miss]].astype(float), minlength=trace.n_passes)
    reads = np.bincount(trace.cell_pass()[trace.access_cell()[miss]], minlength=trace.n_passes)
    short = run.steps["read_bytes"].to_numpy() - raw[trace.pass_phase == DECODE]
    assert np.median(short / reads[trace.pass_phase == DECODE]) == 3 * 4096


def test_gemma_slice_padding_is_identified_from_the_runs_bytes() -> None:
    """gemma's slices are not whole blocks: which expert pays 1 or 2 partial blocks depends on the tensor's file
    offset. Identified from the run's per-step bytes, every decode step matches exactly, and fits from different
    starting points agree on the padding of every expert the run read (the rule's unknowns are determined)."""
    from moesim.runs.check import decode_miss_counts
    from moesim.runs.padding import fit_slice_padding, gemma4_slices

    run = read_run("bundled:gemma")
    trace = load_trace("bundled:gemma")
    miss = trace.annotations["engine_residency"] == 0
    dec = np.flatnonzero(trace.pass_phase == DECODE)
    counts = decode_miss_counts(trace, miss, dec)
    sizes = [gemma4_slices(b) for b in trace.meta.object_bytes]
    assert sizes[0] == [2230272, 2106368] and sizes[7] == [2230272, 1362944]  # Q4_K gate_up; Q8_0 / Q5 down
    measured = run.steps["read_bytes"].to_numpy(dtype=float)
    pads = []
    for seed in (0, 1, 2):
        pad, exact = fit_slice_padding(counts, measured, sizes, seed=seed)
        assert exact == dec.size
        pads.append(pad)
    read = counts.sum(axis=1) > 0  # [layer, expert] read at least once
    for other in pads[1:]:
        np.testing.assert_array_equal(other[read], pads[0][read])
    # each slice pays one or two partial blocks: align - r or 2 align - r, r = its size mod 4096
    for layer, (gate_up, down) in enumerate(sizes):
        r1, r2 = gate_up % 4096, down % 4096
        allowed = {a - r1 + b - r2 for a in (4096, 8192) for b in (4096, 8192)}
        assert set(pads[0][layer].tolist()) <= allowed
