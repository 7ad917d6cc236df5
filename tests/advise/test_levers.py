"""The levers advise searches beyond policies, against hand computations: running the dense FFN /
shared experts while a layer's reads are in flight, read lanes at the storage curve's measured depths,
and the fitted cache bookkeeping per byte read that check-run adds; and the search's top is still the
brute-force minimum once these levers are in the space."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import MiB  # noqa: E402

from moesim.advise.bookkeeping import fitted_bookkeeping  # noqa: E402
from moesim.advise.search import evaluate, search_machine  # noqa: E402
from moesim.advise.space import DIMENSIONS, FFN_OVERLAP, Dimension, Machine, enumerate_space  # noqa: E402
from moesim.advise.workload import Workload, load_spec  # noqa: E402
from moesim.hw_profiles.loader import load_profile  # noqa: E402
from moesim.hw_profiles.profile import StorageCurve, StoragePoint  # noqa: E402
from moesim.sim.timed_replay import setup_planner  # noqa: E402
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


# ---- running the FFN while the reads are in flight ------------------------------------------------------

@pytest.mark.parametrize("model, offered", [("gemma-4-26b-a4b", True), ("qwen3-30b-a3b", False)])
def test_ffn_overlap_is_offered_only_where_the_model_has_an_ffn_beside_its_experts(model, offered):
    w = _workload(_two_pass_trace([1]), model)
    modes = {c.labels()["overlap"] for c in enumerate_space(_phone(), w)}
    assert (FFN_OVERLAP in modes) == offered and {"expert", "layer"} <= modes


@pytest.mark.parametrize("expert_bytes", [EXPERT, 200_000])
def test_ffn_overlap_saves_the_shorter_of_the_read_and_the_ffn_by_hand(expert_bytes):
    """The decode pass misses one expert: its read takes r = latency + B / (one read's rate on the phone's
    curve, 0.788 GB/s). Per-expert pipelining stalls r at the gate and runs the FFN after the experts; with
    the FFN during the read the stall is max(0, r - F): TPOT falls by min(r, F)."""
    trace = simple_trace([[[0]], [[1]]], 1, 16, expert_bytes, phases=[PREFILL, DECODE])
    w = _workload(trace, "gemma-4-26b-a4b")
    m = _phone()
    space = enumerate_space(m, w)
    plain = evaluate(m, w, _pick(space, overlap="expert", eviction="lru", prefetch="none"), {})
    ffn = evaluate(m, w, _pick(space, overlap=FFN_OVERLAP, eviction="lru", prefetch="none"), {})
    assert ffn.config.ffn_overlap and not plain.config.ffn_overlap
    r = 100e-6 + expert_bytes / 0.788e9
    f = float(setup_planner(trace, m.profile, ffn.config).ffn[1])  # the decode cell's shared-expert seconds
    assert f > 0
    assert plain.metrics["tpot"] - ffn.metrics["tpot"] == pytest.approx(min(r, f), rel=1e-9)
    assert ffn.metrics["ttft"] == pytest.approx(plain.metrics["ttft"] - min(r, f), rel=1e-9)


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
    """Eight 4 MB reads behind a per-layer barrier. Four lanes: two waves, each read waits its latency l then
    shares 3 GB/s with three others: 2 l + 8 B / 3e9. Eight lanes: one wave on the curve's 4 GB/s, capped by
    the flash link's own 3.15 GB/s: l + 8 B / 3.15e9."""
    w = _workload(_two_pass_trace(list(range(1, 9)), top_k=8), None)
    m = _phone(_deeper_phone())
    space = enumerate_space(m, w)
    four = evaluate(m, w, _pick(space, lanes="4", overlap="layer", eviction="lru", prefetch="none"), {})
    eight = evaluate(m, w, _pick(space, lanes="8", overlap="layer", eviction="lru", prefetch="none"), {})
    assert eight.config.io_lanes == 8 and four.config.io_lanes is None  # None: the profile's 4
    lat = 1e-4
    link = m.profile.link("ssd_d").bandwidth
    assert link == pytest.approx(3.15e9)
    expected = (2 * lat + 8 * EXPERT / 3e9) - (lat + 8 * EXPERT / min(4e9, link))
    assert four.metrics["tpot"] - eight.metrics["tpot"] == pytest.approx(expected, rel=1e-9)


# ---- cache bookkeeping per byte read -------------------------------------------------------------------

def test_fitted_bookkeeping_comes_from_the_fitted_profile_header_only():
    header = Path(FITTED).read_text(encoding="utf-8").split("\nname:")[0]
    value = float(re.search(r"mgmt_per_byte = ([0-9.eE+-]+)", header).group(1))
    assert fitted_bookkeeping(FITTED) == value > 0
    assert fitted_bookkeeping("phone-oneplus-15r") == 0.0


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


def test_advise_prices_the_engine_configuration_as_check_run_does():
    """The gemma run's own configuration (LRU 4000 MiB, per-expert overlap with the FFN during reads) on the
    profile fitted on qwen: advise's TPOT is check-run's predicted mean, bookkeeping included, so advise's
    answer can be compared with the measured 201.2 ms as check-run's is."""
    from moesim.advise.cli_advise import _machine
    from moesim.advise.workload import resolve_workload
    from moesim.cli import main
    from moesim.sim.cli_timing import resolve_profile

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["check-run", "bundled:gemma", "--trace", "bundled:gemma", "--profile", FITTED, "--json"]) == 0
    predicted = json.loads(buf.getvalue())["summary"]["tpot_s"]["predicted"]["mean"]
    w = resolve_workload("gemma-4-26b-a4b")
    m = _machine(FITTED, resolve_profile(FITTED), None, None, 4000 * MiB)
    assert m.bookkeeping_per_byte > 0
    cand = _pick(enumerate_space(m, w), overlap=FFN_OVERLAP, eviction="lru", prefetch="none")
    assert cand.config_fields()["capacity_bytes"] == 4000 * MiB
    assert evaluate(m, w, cand, {}).metrics["tpot"] == pytest.approx(predicted, rel=1e-9)


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
def test_search_top_is_the_brute_force_minimum_with_ffn_lanes_and_bookkeeping(objective):
    from advise_helpers import zipf_trace

    trace = zipf_trace(seed=11, n_layers=2, n_experts=8, passes=6, object_bytes=EXPERT)
    w = _workload(trace, "gemma-4-26b-a4b")
    m = _phone(_deeper_phone(), cache=int(0.4 * trace.total_object_bytes()), bookkeeping=1e-10)
    dims = _narrow()
    space = enumerate_space(m, w, dims)
    labels = {(c.labels()["overlap"], c.labels()["lanes"]) for c in space}
    assert {(FFN_OVERLAP, "8"), ("expert", "4"), ("layer", "8")} <= labels
    pruned = search_machine(m, w, objective, dimensions=dims)
    brute = search_machine(m, w, objective, prune=False, dimensions=dims)
    assert len(brute.evaluations) == len(space)
    optimum = min(e.metrics[objective] for e in brute.evaluations)
    assert pruned.best(objective).metrics[objective] == pytest.approx(optimum, rel=1e-12)
    for e in brute.evaluations:  # the group bounds stay below every configuration, FFN overlap included
        assert e.bound[objective] <= e.metrics[objective] * (1 + 1e-9), e.candidate.labels()


def test_bigmoeonedge_overlap_maps_to_expert_plus_ffn_where_the_model_has_an_ffn():
    """The engine's --overlap also runs the dense FFN during reads: for gemma it is expert+ffn, and plain
    per-expert pipelining maps onto no option of it; for Qwen3 (no FFN beside its experts) it is expert."""
    from moesim.advise.engines import BIGMOEONEDGE, engine_options

    for model, mapped in (("gemma-4-26b-a4b", {FFN_OVERLAP: True, "expert": False, "layer": True}),
                          ("qwen3-30b-a3b", {"expert": True, "layer": True})):
        w = _workload(_two_pass_trace([1]), model)
        m = _phone(cache=32 * MiB)  # half the experts: an LRU cache, not "all resident"
        for mode, expected in mapped.items():
            cand = _pick(enumerate_space(m, w), overlap=mode, eviction="lru", prefetch="none")
            lines = [o.options for o in engine_options(cand, m, w) if o.engine == BIGMOEONEDGE]
            assert bool(lines) == expected, (model, mode)
            if lines:
                assert lines[0].endswith("--overlap") == (mode != "layer")
