"""cpu-only in advise's space: offered where host DRAM holds the whole model beside a CPU, priced at no
VRAM, answered where the GPU cannot hold even the dense weights; and one overlap mode for placements
that read nothing, because every mode gives the same run there."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import MiB, machine, workload, zipf_trace  # noqa: E402

from moesim.advise.search import search_machine  # noqa: E402
from moesim.advise.space import enumerate_space  # noqa: E402
from moesim.sim.timed_replay import timed_replay  # noqa: E402


def _placements(m, w):
    return {c.labels()["placement"] for c in enumerate_space(m, w)}


def test_offered_where_dram_holds_experts_dense_weights_and_kv_cache():
    trace = zipf_trace()
    experts = trace.total_object_bytes()
    w = workload(trace, dense_bytes=64 * MiB, kv_bytes=16 * MiB)
    whole = experts + 64 * MiB + 16 * MiB
    assert "cpu-only" in _placements(machine("rtx4090", 0.4, trace, dram_free=whole), w)
    assert "cpu-only" not in _placements(machine("rtx4090", 0.4, trace, dram_free=whole - 1), w)  # experts fit, not all
    assert "cpu-all" in _placements(machine("rtx4090", 0.4, trace, dram_free=whole - 1), w)
    assert _placements(machine("phone-oneplus-15r", 0.4, trace), w) == {"gpu"}  # its device is its CPU already


def test_costs_no_vram_and_the_whole_model_in_dram():
    trace = zipf_trace()
    w = workload(trace, dense_bytes=64 * MiB, kv_bytes=16 * MiB)
    m = machine("rtx4090", 0.4, trace, dram_free=10 * trace.total_object_bytes())
    only = [c for c in enumerate_space(m, w) if c.labels()["placement"] == "cpu-only"]
    assert len(only) == 1  # one capacity (none), one eviction (lru), no prefetch, one overlap, stall
    cand = only[0]
    assert cand.vram_bytes(w) == 0
    assert cand.dram_bytes() == trace.total_object_bytes() + 64 * MiB + 16 * MiB
    assert cand.config_fields()["placement"] == "cpu-only" and cand.config_fields()["capacity_bytes"] == 0


def test_a_gpu_too_small_for_the_dense_weights_still_gets_an_answer_on_the_cpu():
    trace = zipf_trace()
    w = workload(trace, dense_bytes=64 * MiB)
    m = dataclasses.replace(machine("rtx4090", 0.4, trace, dram_free=10 * trace.total_object_bytes()), vram_free=MiB)
    outcome = search_machine(m, w, "tpot")
    best = outcome.best("tpot")
    assert outcome.total == 1 and best.candidate.labels()["placement"] == "cpu-only"
    assert best.vram_bytes == 0 and best.metrics["tpot"] > 0


@pytest.mark.parametrize("placement", ["cpu-all", "cpu-only"])
def test_overlap_modes_are_one_run_where_nothing_is_read(placement):
    """Every expert on the CPU from host DRAM: no copy, so per-expert and per-layer overlap time the same run
    (which is why the space offers only one of them there)."""
    trace = zipf_trace(seed=4)
    w = workload(trace)
    m = machine("rtx4090", 0.4, trace, dram_free=10 * trace.total_object_bytes())
    cand = next(c for c in enumerate_space(m, w) if c.labels()["placement"] == placement)
    assert cand.labels()["overlap"] == "layer"
    from moesim.advise.search import resolved_profile, timed_config

    config = timed_config(m, w, cand)
    profile = resolved_profile(m, cand)
    runs = [timed_replay(trace, profile, dataclasses.replace(config, overlap=mode)).summary
            for mode in ("layer", "expert")]
    assert runs[0]["tpot_s"]["mean"] == runs[1]["tpot_s"]["mean"]
    assert runs[0]["ttft_s"]["mean"] == runs[1]["ttft_s"]["mean"]
    assert runs[0]["time"]["total_s"] == runs[1]["time"]["total_s"]
