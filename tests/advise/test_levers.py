"""The levers advise searches beyond policies, against hand computations: the engine changes on a flash
machine (the dense FFN / shared experts while a layer's reads stream; experts taken as they land rather than
in id order), read lanes at the storage curve's measured depths, and the fitted cache bookkeeping per byte
read that check-run adds; and the search's top is still the brute-force minimum once these levers are in
the space. The engine's own configuration against check-run: tests/advise/test_engine_order.py."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import MiB  # noqa: E402

from moesim.runs.engine_map import bookkeeping_per_byte  # noqa: E402
from moesim.advise.search import evaluate, search_machine  # noqa: E402
from moesim.advise.overlap import ARRIVAL_OVERLAP, FFN_ARRIVAL_OVERLAP  # noqa: E402
from moesim.advise.space import DIMENSIONS, FFN_OVERLAP, Dimension, Machine, enumerate_space  # noqa: E402
from moesim.advise.workload import Workload, load_spec  # noqa: E402
from moesim.hw_profiles.loader import load_profile  # noqa: E402
from moesim.hw_profiles.profile import StorageCurve, StoragePoint  # noqa: E402
from moesim.sim.timed_replay import setup_planner, timed_replay  # noqa: E402
from moesim.traces.format.build import simple_trace  # noqa: E402
from moesim.traces.format.trace_meta import DECODE, PREFILL  # noqa: E402

FITTED = "results/fidelity/phone-oneplus-15r-fitted-qwen.yaml"
EXPERT = 4_000_000  # bytes per expert in the hand-built traces


def _workload(trace, model: str | None) -> Workload:
    spec = load_spec(model) if model else None
    return Workload(model=model or "toy", spec=spec, trace=trace, trace_label="hand", synthetic=False, prompt=1,
                    decode=trace.n_passes - 1, batch=1, dense_bytes=0, kv_bytes=0)


def _two_pass_trace(second: list[int], n_experts: int = 16, top_k: int | None = None):
    """One layer: a first pass routing expert 0 (the first token), then one decode pass routing `second`."""
    return simple_trace([[[0]], [second]], 1, n_experts, EXPERT, top_k=top_k, phases=[PREFILL, DECODE])


def _pick(candidates, **labels):
    found = [c for c in candidates if all(c.labels().get(k) == v for k, v in labels.items())]
    assert found, labels
    return found[0]


def _phone(profile=None, cache: int = 64 * MiB, bookkeeping: float = 0.0) -> Machine:
    profile = profile or load_profile("phone-oneplus-15r")
    return Machine("phone", profile, vram_free=cache, dram_free=None, bookkeeping_per_byte=bookkeeping)


# ---- engine changes: the FFN while the reads stream, experts as they land ---------------------------------

@pytest.mark.parametrize("model, offered", [("gemma-4-26b-a4b", True), ("qwen3-30b-a3b", False)])
def test_ffn_overlap_is_offered_only_where_the_model_has_an_ffn_beside_its_experts(model, offered):
    w = _workload(_two_pass_trace([1]), model)
    choices = {c.labels()["overlap"]: c.get("overlap") for c in enumerate_space(_phone(), w)}
    assert (FFN_OVERLAP in choices) == offered == (FFN_ARRIVAL_OVERLAP in choices)
    assert {"expert", "layer", ARRIVAL_OVERLAP} <= set(choices)
    # the engine's own modes need no change; every lever names the one it needs
    assert not choices["expert"].fact("engine_change") and not choices["layer"].fact("engine_change")
    for label, choice in choices.items():
        if label not in ("expert", "layer"):
            assert choice.fact("engine_change") and all(isinstance(t, str) for t in choice.fact("engine_change"))


def _decode_stall(m, w, ev) -> float:
    cells = timed_replay(w.trace, m.profile, ev.config).cells
    return float(cells.loc[cells["phase"] == "decode", "stall_s"].sum())


@pytest.mark.parametrize("expert_bytes", [16_000_000, 200_000])
def test_ffn_during_reads_saves_the_ffn_or_the_whole_wait_by_hand(expert_bytes):
    """The decode pass misses one gemma expert, read as its two slices (the engine's order). Run first, the
    FFN (F seconds) leaves the expert units' waits unchanged when the first slice lands more than F after the
    gate (a 16 MB expert: its 2/3 slice takes at least the latency + 10.7 MB at the link's 3.15 GB/s), so TPOT
    falls by F exactly; when every slice has landed within F (200 kB), nothing waits any more and TPOT falls
    by the plain run's whole stall. The prefill is a per-layer barrier (the engine's), so TTFT is unchanged."""
    trace = simple_trace([[[0]], [[1]]], 1, 16, expert_bytes, phases=[PREFILL, DECODE])
    w = _workload(trace, "gemma-4-26b-a4b")
    m = _phone()
    space = enumerate_space(m, w)
    plain = evaluate(m, w, _pick(space, overlap="expert", eviction="lru"), {})
    ffn = evaluate(m, w, _pick(space, overlap=FFN_OVERLAP, eviction="lru"), {})
    assert ffn.config.ffn_overlap and not plain.config.ffn_overlap
    assert ffn.config.read_slices == plain.config.read_slices == (2 / 3, 1 / 3)
    f = float(setup_planner(trace, m.profile, ffn.config).ffn[1])  # the decode cell's dense-MLP seconds
    stall = _decode_stall(m, w, plain)
    assert 0 < f
    if expert_bytes > EXPERT:
        assert f < 1e-4 + (2 / 3) * expert_bytes / 3.15e9 < stall  # the first slice lands after the FFN
        assert plain.metrics["tpot"] - ffn.metrics["tpot"] == pytest.approx(f, rel=1e-9)
    else:
        assert 0 < stall < f
        assert plain.metrics["tpot"] - ffn.metrics["tpot"] == pytest.approx(stall, rel=1e-9)
    assert ffn.metrics["ttft"] == pytest.approx(plain.metrics["ttft"], rel=1e-12)


def test_experts_as_they_land_save_the_resident_experts_compute_by_hand():
    """The decode pass routes expert 1 (missed, 4 MB) and expert 2 (resident since the prefill). In the
    engine's id order every (slice, expert) unit queues behind expert 1's first slice, landing at a0: the
    layer's experts end at a0 + 2c (c: one expert's compute for one token). Taking experts as they land,
    expert 2 runs during the read (c < a0 - gate) and expert 1 at its landing: a0 + c. TPOT falls by c."""
    from moesim.sim.compute import expert_request_times

    trace = simple_trace([[[2, 3]], [[1, 2]]], 1, 16, EXPERT, top_k=2, phases=[PREFILL, DECODE])
    w = _workload(trace, "gemma-4-26b-a4b")
    m = _phone()
    space = enumerate_space(m, w)
    own = evaluate(m, w, _pick(space, overlap="expert", eviction="lru"), {})
    landed = evaluate(m, w, _pick(space, overlap=ARRIVAL_OVERLAP, eviction="lru"), {})
    assert own.config.expert_order == "id" and landed.config.expert_order == "arrival"
    model = setup_planner(trace, m.profile, own.config).compute
    c = float(expert_request_times(model, np.array([0]), np.array([EXPERT]), np.array([1]), "gpu")[0])
    assert 0 < c < 1e-4 + (2 / 3) * EXPERT / 3.15e9  # expert 2 finishes before expert 1's first slice lands
    assert own.metrics["tpot"] - landed.metrics["tpot"] == pytest.approx(c, rel=1e-9)


def test_prefetch_is_searched_where_reads_follow_the_engine():
    """The clock times slice reads beside prefetches (a copy into a prefetch's reused slot waits for it:
    tests/sim/test_read_slices_prefetch.py), so prefetchers are searched on a flash machine as over a host link."""
    w = _workload(_two_pass_trace([1]), "gemma-4-26b-a4b")
    assert "markov" in {c.labels()["prefetch"] for c in enumerate_space(_phone(cache=32 * MiB), w)}
    gpu = Machine("rtx4090", load_profile("rtx4090"), 2**30, None)
    assert "markov" in {c.labels()["prefetch"] for c in enumerate_space(gpu, w)}


# ---- read lanes ----------------------------------------------------------------------------------------

def _deeper_phone():
    """The phone with its flash measured at 8 reads in flight too (4 GB/s); default lanes stay 4."""
    base = load_profile("phone-oneplus-15r")
    ssd = base.tier("ssd")
    curve = StorageCurve((StoragePoint(2.86e6, 1, 1e9), StoragePoint(2.86e6, 4, 3e9), StoragePoint(2.86e6, 8, 4e9)))
    tiers = dict(base.tiers)
    tiers["ssd"] = dataclasses.replace(ssd, throughput=curve, read_lanes=4, latency=1e-4)
    return dataclasses.replace(base, tiers=tiers)


def test_lanes_are_the_default_and_deeper_measured_depths_only():
    w = _workload(_two_pass_trace(list(range(1, 9)), top_k=8), None)
    assert {c.labels()["lanes"] for c in enumerate_space(_phone(), w)} == {"4"}  # the shipped curve stops at 4
    assert {c.labels()["lanes"] for c in enumerate_space(_phone(_deeper_phone()), w)} == {"4", "8"}
    gpu = Machine("rtx4090", load_profile("rtx4090"), 20 * 2**30, 48 * 2**30)
    assert {c.labels()["lanes"] for c in enumerate_space(gpu, w)} == {"no storage reads"}  # experts in DRAM


def test_more_lanes_shorten_a_layer_of_reads_by_hand():
    """Eight 4 MB misses behind a per-layer barrier, each read as the engine reads it: three equal slices (a
    model without its own slice shares), one lane each, 24 requests. Four lanes: six waves, each waiting its
    latency l then sharing 3 GB/s among four: 6 l + 8 B / 3e9. Eight lanes: three waves on the curve's 4 GB/s,
    capped by the flash link's own 3.15 GB/s: 3 l + 8 B / 3.15e9."""
    w = _workload(_two_pass_trace(list(range(1, 9)), top_k=8), None)
    m = _phone(_deeper_phone())
    space = enumerate_space(m, w)
    four = evaluate(m, w, _pick(space, lanes="4", overlap="layer", eviction="lru", prefetch="none"), {})
    eight = evaluate(m, w, _pick(space, lanes="8", overlap="layer", eviction="lru", prefetch="none"), {})
    assert eight.config.io_lanes == 8 and four.config.io_lanes is None  # None: the profile's 4
    assert four.config.read_slices == pytest.approx((1 / 3,) * 3) and four.config.slice_order == "expert"
    lat = 1e-4
    link = m.profile.link("ssd_d").bandwidth
    assert link == pytest.approx(3.15e9)
    expected = (6 * lat + 8 * EXPERT / 3e9) - (3 * lat + 8 * EXPERT / min(4e9, link))
    assert four.metrics["tpot"] - eight.metrics["tpot"] == pytest.approx(expected, rel=1e-9)


# ---- cache bookkeeping per byte read -------------------------------------------------------------------

def test_fitted_bookkeeping_comes_from_the_fitted_profile_header_only():
    header = Path(FITTED).read_text(encoding="utf-8").split("\nname:")[0]
    value = float(re.search(r"mgmt_per_byte = ([0-9.eE+-]+)", header).group(1))
    assert bookkeeping_per_byte(FITTED) == value > 0
    assert bookkeeping_per_byte("phone-oneplus-15r") == 0.0


def test_bookkeeping_adds_per_byte_times_each_pass_bytes_by_hand():
    """Pass 0 reads expert 0, pass 1 experts 1 and 2 (a cold cache that holds them all): with m s/B the first
    token comes m x 4 MB later, each later token m x 8 MB later, the whole run m x 12 MB."""
    m_per_byte = 2e-10
    trace = _two_pass_trace([1, 2])
    w = _workload(trace, None)
    plain_m, kept_m = _phone(), _phone(bookkeeping=m_per_byte)
    cand = _pick(enumerate_space(plain_m, w), overlap="expert", eviction="lru", prefetch="none")
    plain, kept = evaluate(plain_m, w, cand, {}), evaluate(kept_m, w, cand, {})
    assert kept.metrics["ttft"] - plain.metrics["ttft"] == pytest.approx(m_per_byte * EXPERT, rel=1e-9)
    assert kept.metrics["tpot"] - plain.metrics["tpot"] == pytest.approx(m_per_byte * 2 * EXPERT, rel=1e-9)
    added = kept.summary["time"]["total_s"] - plain.summary["time"]["total_s"]
    assert added == pytest.approx(m_per_byte * 3 * EXPERT, rel=1e-9)
    assert kept.summary["time"]["bookkeeping_s"] == pytest.approx(added, rel=1e-12)
    assert kept.metrics["bytes_per_token"] == pytest.approx(plain.metrics["bytes_per_token"], rel=1e-12)  # same bytes


# ---- the search with the new levers in the space ------------------------------------------------------

def _narrow():
    keep = {"eviction": ("lru", "slru"), "prefetch": ("none", "previous-pass")}

    def narrowed(dim: Dimension) -> Dimension:
        if dim.name not in keep:
            return dim
        return Dimension(dim.name, dim.help, lambda m, w, chosen, dim=dim: [
            c for c in dim.candidates(m, w, chosen) if c.label in keep[dim.name] or c.label == "preload all"],
            dim.bound_key)

    return tuple(narrowed(d) for d in DIMENSIONS)


@pytest.mark.parametrize("objective", ["tpot", "ttft"])
def test_search_top_is_the_brute_force_minimum_with_engine_changes_lanes_and_bookkeeping(objective):
    from advise_helpers import zipf_trace

    trace = zipf_trace(seed=11, n_layers=2, n_experts=8, passes=6, object_bytes=EXPERT)
    w = _workload(trace, "gemma-4-26b-a4b")
    m = _phone(_deeper_phone(), cache=int(0.4 * trace.total_object_bytes()), bookkeeping=1e-10)
    dims = _narrow()
    space = enumerate_space(m, w, dims)
    labels = {(c.labels()["overlap"], c.labels()["lanes"]) for c in space}
    assert {(FFN_OVERLAP, "8"), (FFN_ARRIVAL_OVERLAP, "4"), ("expert", "4"), ("layer", "8")} <= labels
    pruned = search_machine(m, w, objective, dimensions=dims)
    brute = search_machine(m, w, objective, prune=False, dimensions=dims)
    assert len(brute.evaluations) == len(space)
    optimum = min(e.metrics[objective] for e in brute.evaluations)
    assert pruned.best(objective).metrics[objective] == pytest.approx(optimum, rel=1e-12)
    for e in brute.evaluations:  # the group bounds stay below every configuration, FFN overlap included
        assert e.bound[objective] <= e.metrics[objective] * (1 + 1e-9), e.candidate.labels()
