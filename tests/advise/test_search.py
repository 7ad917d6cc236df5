"""advise's search against a brute-force sweep of the same space: pruning never loses the optimum,
and every configuration it proposes fits the memory it was given."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import MiB, machine, workload, zipf_trace  # noqa: E402

from moesim.advise.search import search_machine  # noqa: E402
from moesim.advise.space import DIMENSIONS, Choice, Dimension, enumerate_space  # noqa: E402

PROFILES = ("rtx4090", "phone-oneplus-15r")


def _brute(m, w, objective, dimensions=DIMENSIONS):
    return search_machine(m, w, objective, prune=False, dimensions=dimensions)


@pytest.mark.parametrize("profile, objective, full", [
    ("rtx4090", "tpot", True), ("phone-oneplus-15r", "tpot", True),  # the whole table
    ("rtx4090", "ttft", False), ("phone-oneplus-15r", "ttft", False),  # fewer policies (suite time)
])
def test_top_configuration_is_at_least_as_fast_as_every_brute_force_one(profile, objective, full):
    trace = zipf_trace(seed=3)
    w = workload(trace)
    m = machine(profile, 0.4, trace)
    dims = DIMENSIONS if full else _small_dimensions()
    pruned = search_machine(m, w, objective, dimensions=dims)
    brute = _brute(m, w, objective, dims)
    assert len(brute.evaluations) == brute.total == len(enumerate_space(m, w, dims))  # nothing skipped
    best = pruned.best(objective).metrics[objective]
    assert all(best <= e.metrics[objective] + 1e-12 for e in brute.evaluations)
    assert best == pytest.approx(min(e.metrics[objective] for e in brute.evaluations), rel=1e-12)
    # every configuration the search did not time was pruned by a bound no better than its best
    assert len(pruned.evaluations) + len(pruned.pruned) == pruned.total and not pruned.not_reached
    assert all(bound >= best for _, bound in pruned.pruned)


def test_bounds_hold_for_every_timed_configuration():
    """The group bound the search prunes with is below every configuration of the group (brute force)."""
    trace = zipf_trace(seed=5, passes=8)
    w = workload(trace)
    for profile in PROFILES:
        brute = _brute(machine(profile, 0.3, trace), w, "tpot", _small_dimensions())
        for e in brute.evaluations:
            for objective in ("tpot", "ttft", "throughput"):
                assert e.bound[objective] <= e.metrics[objective] * (1 + 1e-9), (e.candidate.labels(), objective)


def _small_dimensions():
    """The same table with fewer policies, so that hypothesis can afford many searches."""
    keep = {"eviction": ("lru", "lfu", "static-hot:profile_passes=1"), "prefetch": ("none", "previous-pass")}

    def narrowed(dim: Dimension) -> Dimension:
        if dim.name not in keep:
            return dim

        def candidates(m, w, chosen, dim=dim):
            return [c for c in dim.candidates(m, w, chosen) if c.label in keep[dim.name] or c.label == "preload all"]

        return Dimension(dim.name, dim.help, candidates, dim.bound_key)

    return tuple(narrowed(d) for d in DIMENSIONS)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), share=st.sampled_from([0.15, 0.3, 0.6, 1.2]),
       zipf=st.sampled_from([0.0, 0.8, 1.5]), profile=st.sampled_from(PROFILES),
       objective=st.sampled_from(["tpot", "ttft", "throughput"]))
def test_pruning_never_drops_the_optimum(seed, share, zipf, profile, objective):
    trace = zipf_trace(seed=seed, zipf=zipf, passes=6, n_experts=6)
    w = workload(trace)
    m = machine(profile, share, trace)
    dims = _small_dimensions()
    pruned = search_machine(m, w, objective, dimensions=dims)
    brute = _brute(m, w, objective, dims)
    optimum = min(e.metrics[objective] for e in brute.evaluations)
    assert pruned.best(objective).metrics[objective] == pytest.approx(optimum, rel=1e-12)


@pytest.mark.parametrize("share", [0.2, 0.5, 2.0])
def test_memory_limits_are_respected(share):
    trace = zipf_trace(seed=1)
    w = workload(trace, kv_bytes=16 * MiB)
    experts = trace.total_object_bytes()
    m = machine("rtx4090", share, trace, dram_free=experts // 2)
    vram_limit = min(m.vram_free, int(m.profile.tier("vram").usable))
    outcome = _brute(m, w, "tpot", _small_dimensions())
    assert outcome.evaluations
    for e in outcome.evaluations:
        cap = e.config.capacity_bytes
        assert cap <= min(vram_limit - w.dense_bytes - w.kv_bytes, experts)
        assert e.vram_bytes == w.dense_bytes + w.kv_bytes + cap <= vram_limit
        # DRAM holds half the experts: they live on SSD behind a DRAM cache no larger than DRAM free
        topo = e.summary["topology"]
        assert topo["home"] == "ssd" and topo["dram_cache_bytes"] <= experts // 2
        assert e.dram_bytes <= experts // 2


def test_nothing_fits_says_so():
    trace = zipf_trace()
    w = workload(trace, dense_bytes=10**12)
    m = machine("rtx4090", 0.5, trace)
    outcome = search_machine(m, w, "tpot")
    assert outcome.evaluations == [] and outcome.notes and "nothing fits" in outcome.notes[0]


def test_order_and_results_are_deterministic():
    trace = zipf_trace(seed=7)
    w = workload(trace)
    runs = [search_machine(machine("phone-oneplus-15r", 0.4, trace), w, "tpot", dimensions=_small_dimensions())
            for _ in range(2)]
    a, b = ([(e.candidate.index, e.metrics["tpot"]) for e in r.evaluations] for r in runs)
    assert a == b


def test_budget_stops_the_search_and_lists_what_was_not_timed():
    trace = zipf_trace(seed=2)
    w = workload(trace)
    m = machine("phone-oneplus-15r", 0.4, trace)
    outcome = search_machine(m, w, "tpot", deadline=0.0)  # already passed: only the baseline runs
    assert len(outcome.evaluations) == 1 and outcome.evaluations[0].candidate.is_baseline()
    assert len(outcome.not_reached) + len(outcome.pruned) + 1 == outcome.total
    assert math.isfinite(outcome.best("tpot").metrics["tpot"])


def test_dimension_table_drives_the_space():
    """A dimension is one row: adding one multiplies the space and its choice reaches the run config."""
    trace = zipf_trace()
    w = workload(trace)
    m = machine("rtx4090", 0.4, trace)
    extra = Dimension("scope", "cache scope", lambda m, w, chosen: [
        Choice("scope", s, config=(("scope", s),)) for s in ("global", "layer")])
    base = enumerate_space(m, w)
    more = enumerate_space(m, w, DIMENSIONS + (extra,))
    assert len(more) == 2 * len(base)
    assert {c.config_fields()["scope"] for c in more} == {"global", "layer"}
