"""The hardware graph's clock, checked by hand: links as shared (processor-sharing) servers, storage
throughput curves, routes found from the graph, and the two overlap modes.

Unless a test says otherwise: objects of 1 MB, no dense weights, h2d at 1 GB/s (1000 us per 1 MB),
HBM at 1 TB/s (1 us per 1 MB expert), 1 PFLOP/s (a 1-token expert's FLOPs are negligible: 1 ns).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.hw_profiles.loader import load_profile
from moesim.hw_profiles.profile import StorageCurve, StoragePoint
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.sim.topology import LinkServer, build_topology
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.build import simple_trace

from timing_helpers import MB, US, make_profile

DATA = Path(__file__).resolve().parents[1] / "hw_profiles" / "data"


def _trace(cells, n_layers=1, n_experts=4):
    trace = simple_trace(cells, n_layers=n_layers, n_experts=n_experts, object_bytes=MB,
                         phases=[DECODE] * len(cells))
    trace.meta.dense_bytes = [0] * n_layers
    trace.meta.model = None
    return trace


def _copy_seconds(result):
    engine = result.engine
    return (engine.copy_end - engine.copy_start) / US


# --- links -------------------------------------------------------------------------------------


def test_all_miss_decode_is_bytes_over_bandwidth_plus_latency_plus_compute():
    """One decode pass, 2 layers x 3 misses each, h2d 1 GB/s + 10 us, one copy engine.

    Per layer: 3 x (10 + 1000) us of copies, then 3 MB / 1 TB/s = 3 us of experts + 5 us launch;
    dense: 0 bytes + 5 us launch. Total = 2 x (5 + 3030 + 8) = 6086 us.
    """
    trace = _trace([[[0, 1, 2], [0, 1, 2]]], n_layers=2)
    profile = make_profile(host_bw=1e9, host_latency=10 * US, launch=5 * US)
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB))
    assert result.cells["stall_s"].tolist() == pytest.approx([3030 * US] * 2, abs=1e-12)
    assert result.summary["time"]["total_s"] == pytest.approx(6086 * US, abs=1e-12)


def test_two_copy_engines_are_no_faster_than_one_unless_the_link_is_widened():
    """3 misses on a 1 GB/s link without latency: one engine 3 x 1000 us; two engines share the
    link (two at 0.5 GB/s for 2000 us, then one alone for 1000 us): 3000 us too. Widening the link
    to 2 GB/s halves it: 1500 us."""
    trace = _trace([[[0, 1, 2]]])
    config = TimedConfig(capacity_bytes=8 * MB)
    one = timed_replay(trace, make_profile(host_bw=1e9), config)
    two = timed_replay(trace, make_profile(host_bw=1e9, host_engines=2), config)
    wide = timed_replay(trace, make_profile(host_bw=2e9, host_engines=2), config)
    assert one.cells["stall_s"].iloc[0] == pytest.approx(3000 * US, abs=1e-12)
    assert two.cells["stall_s"].iloc[0] == pytest.approx(3000 * US, abs=1e-12)
    assert _copy_seconds(two).tolist() == pytest.approx([2000, 2000, 1000], abs=1e-6)
    assert wide.cells["stall_s"].iloc[0] == pytest.approx(1500 * US, abs=1e-12)


@pytest.mark.parametrize("engines", [1, 2, 3])
def test_doubling_a_links_bandwidth_halves_its_transfer_times(engines):
    trace = _trace([[[0, 1, 2]], [[3, 0, 1]]])
    config = TimedConfig(capacity_bytes=3 * MB)
    slow = timed_replay(trace, make_profile(host_bw=1e9, host_engines=engines), config)
    fast = timed_replay(trace, make_profile(host_bw=2e9, host_engines=engines), config)
    assert slow.plan.copy_obj.tolist() == fast.plan.copy_obj.tolist()
    assert _copy_seconds(fast) == pytest.approx(_copy_seconds(slow) / 2, rel=1e-9)
    assert fast.summary["time"]["stall_s"] == pytest.approx(slow.summary["time"]["stall_s"] / 2, rel=1e-9)


# --- storage -----------------------------------------------------------------------------------


@st.composite
def rising_curves(draw):
    sizes = sorted(draw(st.sets(st.integers(4, 24), min_size=1, max_size=3)))
    points = []
    for size in sizes:
        depths = sorted(draw(st.sets(st.integers(1, 64), min_size=1, max_size=4)))
        bw = 0.0
        for d in depths:
            bw += draw(st.floats(0.0, 2e9)) + (1e6 if bw == 0 else 0.0)
            points.append(StoragePoint(float(2**size), d, bw))
    return StorageCurve(tuple(points))


@settings(max_examples=200, deadline=None)
@given(rising_curves(), st.floats(1e3, 1e8), st.integers(1, 80), st.floats(1e8, 1e11))
def test_ssd_throughput_never_falls_as_queue_depth_rises(curve, request_size, depth, link_bw):
    assert curve.bandwidth(request_size, depth + 1) >= curve.bandwidth(request_size, depth) - 1e-6
    server = LinkServer("ssd_h", "ssd", "dram", 80, 0.0, link_bw, curve, request_size)
    assert server.aggregate(depth + 1) >= server.aggregate(depth) - 1e-6


def test_storage_curve_interpolates_by_hand():
    curve = StorageCurve((StoragePoint(2**17, 1, 0.5e9), StoragePoint(2**17, 4, 1e9),
                          StoragePoint(2**20, 1, 1e9), StoragePoint(2**20, 2, 2e9), StoragePoint(2**20, 8, 4e9)))
    assert curve.bandwidth(2**20, 5) == pytest.approx(3e9)  # halfway from depth 2 to 8
    assert curve.bandwidth(2**20, 16) == pytest.approx(4e9)  # flat beyond the last depth
    assert curve.bandwidth(2**17, 2) == pytest.approx(0.5e9 + 0.5e9 / 3)
    # 362 KiB is halfway between 128 KiB and 1 MiB in log size: the mean of the two columns at depth 1
    assert curve.bandwidth(2**18.5, 1) == pytest.approx(0.75e9)


def test_a_batch_of_reads_can_end_later_with_one_more_lane():
    """The curve never falls, yet a batch's end time is not monotone in lanes: 5 reads of 1 MB on a
    flash at 0.8 GB/s for one read, 2 GB/s for 3, 2.4 GB/s for 6 (2.133 GB/s for 4).
    3 lanes: 3 reads at 2/3 GB/s each (1500 us), then 2 at 1.4/2 GB/s (1428.6 us): 2928.6 us.
    4 lanes: 4 reads at 2.133/4 GB/s each (1875 us), then the last alone at 0.8 GB/s (1250 us): 3125 us.
    """
    trace = _trace([[[0, 1, 2, 3, 4]]], n_experts=8)
    profile = load_profile(str(DATA / "page-cache.yaml"))
    curve = StorageCurve((StoragePoint(2**20, 1, 0.8e9), StoragePoint(2**20, 3, 2e9), StoragePoint(2**20, 6, 2.4e9)))
    ssd = dataclasses.replace(profile.tiers["ssd"], throughput=curve)
    profile = dataclasses.replace(profile, tiers={**profile.tiers, "ssd": ssd})
    stall = {n: timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB, io_lanes=n)).cells["stall_s"].iloc[0]
             for n in (3, 4)}
    assert stall[3] == pytest.approx(1500 * US + 2 * MB / 1.4e9, rel=1e-9)
    assert stall[4] == pytest.approx(4 * MB / (2e9 + 0.4e9 / 3) + MB / 0.8e9, rel=1e-9)


def test_read_lanes_share_the_flash_curve_by_hand():
    """Phone-style flash: one read alone 0.788 GB/s, four in flight 3.15 GB/s in all (linear between).
    4 misses of 1 MB: with 4 lanes they run together at 3.15/4 GB/s each: 1 MB / 0.7875 GB/s =
    1269.8 us; with 2 lanes, two waves at (0.788 + (3.15 - 0.788) / 3) / 2 GB/s each."""
    trace = _trace([[[0, 1, 2, 3]]], n_experts=8)
    phone = load_profile("phone-oneplus-15r")
    four = timed_replay(trace, phone, TimedConfig(capacity_bytes=8 * MB, overlap="layer"))
    two = timed_replay(trace, phone, TimedConfig(capacity_bytes=8 * MB, overlap="layer", io_lanes=2))
    latency = phone.tiers["ssd"].latency
    assert four.cells["stall_s"].iloc[0] == pytest.approx(latency + MB / (3.15e9 / 4), rel=1e-9)
    agg2 = 0.788e9 + (3.15e9 - 0.788e9) / 3
    assert two.cells["stall_s"].iloc[0] == pytest.approx(2 * (latency + MB / (agg2 / 2)), rel=1e-9)
    assert four.summary["config"]["io_lanes"] is None and two.summary["config"]["io_lanes"] == 2


def test_page_cache_is_used_only_for_buffered_reads():
    """Direct: ssd -> vram at the curve's 1 MiB column (2 lanes: 2 GB/s, 1 GB/s each).
    Buffered: ssd -> page cache in 128 KiB readahead requests (2 lanes: 0.5 + 0.5/3 GB/s in all),
    then a 10 GB/s copy into vram; the 2 MB page cache stages the reads."""
    profile = load_profile(str(DATA / "page-cache.yaml"))
    direct = build_topology(profile, 10 * MB)
    assert (direct.home, direct.stage, direct.ssd_link) == ("ssd", None, "ssd_d")
    assert direct.servers[0].peak() == pytest.approx(2e9)
    buffered = build_topology(profile, 10 * MB, storage_reads="buffered")
    assert (buffered.stage, buffered.dram_cache_bytes, buffered.ssd_link, buffered.host_link) == (
        "page_cache", 2 * MB, "readahead", "pc_copy")
    assert buffered.server_of(1).peak() == pytest.approx(0.5e9 + 0.5e9 / 3)
    trace = _trace([[[0, 1]]])
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB, storage_reads="direct"))
    assert result.cells["stall_s"].iloc[0] == pytest.approx(MB / 1e9, rel=1e-9)  # two reads side by side
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB, storage_reads="buffered"))
    assert set(result.summary["links"]) == {"readahead", "pc_copy"}
    read = MB / ((0.5e9 + 0.5e9 / 3) / 2)  # both reads share the readahead server
    assert result.cells["stall_s"].iloc[0] == pytest.approx(read + 2 * MB / 10e9, rel=1e-9)  # then 2 copies in a row


# --- new tiers and links are profile edits -----------------------------------------------------


def test_a_cxl_tier_loads_and_runs_with_no_code_change():
    """8 MB of experts do not fit the 4 MB DRAM: they live in CXL memory and cross cxl_d
    (2 GB/s + 20 us): 2 misses = 2 x (20 + 500) us."""
    profile = load_profile(str(DATA / "cxl-tier.yaml"))
    trace = _trace([[[0, 1]], [[2, 3]]], n_experts=8)
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB))
    assert result.summary["topology"]["home"] == "cxl"
    assert set(result.summary["links"]) == {"cxl_d"}
    assert result.cells["stall_s"].tolist() == pytest.approx([1040 * US, 1040 * US], abs=1e-12)
    assert result.summary["energy_j"]["links"]["cxl_d"] == pytest.approx(4 * MB * 1e-9)


def test_a_peer_gpu_link_loads_and_runs_with_no_code_change():
    """Experts in the peer GPU's HBM cross nvlink (4 GB/s, 5 us, 2 engines sharing it):
    3 misses: two start together (5 us, then 2 MB at 4 GB/s shared: 500 us), the third after
    (5 + 250 us): stall 760 us."""
    profile = load_profile(str(DATA / "peer-gpu.yaml"))
    result = timed_replay(_trace([[[0, 1, 2]]]), profile, TimedConfig(capacity_bytes=8 * MB))
    assert result.summary["topology"]["home"] == "peer"
    assert result.cells["stall_s"].iloc[0] == pytest.approx(760 * US, abs=1e-12)


def test_a_pre_graph_profile_file_still_loads_and_times_like_its_migration():
    old = load_profile(str(DATA / "legacy-h100-pcie.yaml"))
    new = load_profile("h100-pcie")
    assert old.links == new.links and old.tiers == new.tiers
    assert old.compute.peak_flops == new.compute.peak_flops and "cpu" not in old.processors
    trace = _trace([[[0, 1, 2]]])
    # the migration also states the framework (pytorch-eager); the pre-graph file has none (kernel
    # counts then default to "fused"), so both run under the migrated one here
    same = TimedConfig(capacity_bytes=8 * MB, framework=new.framework)
    a = timed_replay(trace, old, same)
    b = timed_replay(trace, new, same)
    assert a.summary["time"]["total_s"] == b.summary["time"]["total_s"]


# --- overlap modes -----------------------------------------------------------------------------


def _overlap_case(memory_bandwidth, overlap):
    """Pass 0 loads expert 0; pass 1 needs [0, 1, 2]: 0 is resident, 1 and 2 arrive 1000 us and
    2000 us after the gate (h2d 1 GB/s, no latency, one engine)."""
    trace = _trace([[[0]], [[0, 1, 2]]])
    profile = make_profile(host_bw=1e9, memory_bandwidth=memory_bandwidth)
    return timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB, overlap=overlap))


def test_per_expert_pipelining_hand_timeline():
    """Each expert takes 1 MB / 3.33 GB/s = 300 us. Pipelined: expert 0 runs 0-300, waits until
    1000 for expert 1 (runs 1000-1300), waits until 2000 for expert 2 (2000-2300): the stream waited
    700 + 700 = 1400 us; the cell ends at gate + 2300 = gate + stall 1400 + experts 900."""
    result = _overlap_case(MB / (300 * US), "expert")
    cell = result.cells.iloc[1]
    assert cell["expert_s"] == pytest.approx(900 * US, rel=1e-9)
    assert cell["stall_s"] == pytest.approx(1400 * US, rel=1e-9)
    assert cell["end_s"] - cell["gate_s"] == pytest.approx(2300 * US, rel=1e-9)


def test_per_layer_barrier_hand_timeline():
    """Barrier: all three experts wait for the last copy (2000 us), then run as one kernel
    (3 MB / 3.33 GB/s = 900 us): stall 2000 us, the cell ends at gate + 2900."""
    result = _overlap_case(MB / (300 * US), "layer")
    cell = result.cells.iloc[1]
    assert cell["stall_s"] == pytest.approx(2000 * US, rel=1e-9)
    assert cell["end_s"] - cell["gate_s"] == pytest.approx(2900 * US, rel=1e-9)


def test_pipelining_hides_copies_behind_long_experts():
    """Experts of 1500 us: expert 0 runs 0-1500, expert 1 (landed at 1000) 1500-3000, expert 2
    (landed at 2000) 3000-4500: the stream never waits."""
    result = _overlap_case(MB / (1500 * US), "expert")
    assert result.cells["stall_s"].iloc[1] == pytest.approx(0.0, abs=1e-12)
    assert result.cells["end_s"].iloc[1] - result.cells["gate_s"].iloc[1] == pytest.approx(4500 * US, rel=1e-9)


def test_overlap_defaults_to_the_profile_and_is_recorded():
    trace = _trace([[[0]], [[0, 1, 2]]])
    phone_like = make_profile(host_bw=1e9, memory_bandwidth=MB / (300 * US))
    phone_like = dataclasses.replace(phone_like, overlap="expert")
    result = timed_replay(trace, phone_like, TimedConfig(capacity_bytes=8 * MB))
    assert result.cells["stall_s"].iloc[1] == pytest.approx(1400 * US, rel=1e-9)
    assert result.summary["config"]["overlap"] is None
    with pytest.raises(Exception, match="overlap"):
        timed_replay(trace, phone_like, TimedConfig(capacity_bytes=8 * MB, overlap="token"))


def test_pipelined_stall_is_never_more_than_the_barrier_stall():
    rng = np.random.default_rng(3)
    for _ in range(5):
        cells = [[sorted(rng.choice(8, size=3, replace=False).tolist())] for _ in range(12)]
        trace = _trace(cells, n_experts=8)
        profile = make_profile(host_bw=1e9, host_engines=2, memory_bandwidth=MB / (400 * US))
        layer = timed_replay(trace, profile, TimedConfig(capacity_bytes=4 * MB, overlap="layer"))
        expert = timed_replay(trace, profile, TimedConfig(capacity_bytes=4 * MB, overlap="expert"))
        assert layer.plan.copy_obj.tolist() == expert.plan.copy_obj.tolist()
        # one grouped kernel vs one per expert have the same roofline here (no launch cost)
        assert expert.summary["time"]["total_s"] <= layer.summary["time"]["total_s"] + 1e-12


def test_a_full_duplex_link_carries_the_reverse_direction_and_a_simplex_one_does_not():
    """nvlink declared vram -> peer: full duplex still reaches vram from the peer (at
    reverse_bandwidth 4 GB/s: the same 760 us as the forward declaration); simplex does not, so
    the experts live in host DRAM behind h2d (3 x (10 + 1000) us)."""
    profile = load_profile(str(DATA / "peer-gpu.yaml"))
    link = profile.links["nvlink"]
    flipped = dataclasses.replace(link, src="vram", dst="peer", bandwidth=1e9, reverse_bandwidth=4e9)
    full = dataclasses.replace(profile, links={**profile.links, "nvlink": flipped})
    simplex = dataclasses.replace(profile, links={**profile.links, "nvlink": dataclasses.replace(flipped, duplex="simplex")})
    trace = _trace([[[0, 1, 2]]])
    a = timed_replay(trace, full, TimedConfig(capacity_bytes=8 * MB))
    assert a.summary["topology"]["home"] == "peer"
    assert a.cells["stall_s"].iloc[0] == pytest.approx(760 * US, abs=1e-12)
    b = timed_replay(trace, simplex, TimedConfig(capacity_bytes=8 * MB))
    assert b.summary["topology"]["home"] == "dram"
    assert b.cells["stall_s"].iloc[0] == pytest.approx(3030 * US, abs=1e-12)


def test_io_lanes_and_read_lanes_override_agree():
    """The run option and a profile override set the same thing: reads in flight out of storage."""
    trace = _trace([[[0, 1, 2, 3]]], n_experts=8)
    from moesim.hw_profiles.loader import apply_overrides

    phone = load_profile("phone-oneplus-15r")
    by_option = timed_replay(trace, phone, TimedConfig(capacity_bytes=8 * MB, io_lanes=2))
    by_profile = timed_replay(trace, apply_overrides(phone, ["memories.ssd.read_lanes=2"]),
                              TimedConfig(capacity_bytes=8 * MB))
    assert by_option.summary["time"]["total_s"] == by_profile.summary["time"]["total_s"]
    with pytest.raises(Exception, match="io lanes"):
        timed_replay(trace, phone, TimedConfig(capacity_bytes=8 * MB, io_lanes=0))


def test_reads_split_into_requests_deepen_the_device_queue():
    """requests_per_read 2: two lanes present 4 requests of 1 MiB to the device: the test SSD's
    curve at depth 4 is 2 + 2 x 2/6 = 2.667 GB/s (at depth 2: 2 GB/s), and the link caps at 8."""
    from moesim.hw_profiles.loader import apply_overrides

    profile = load_profile(str(DATA / "page-cache.yaml"))
    split = apply_overrides(profile, ["memories.ssd.requests_per_read=2"])
    assert build_topology(profile, 10 * MB).servers[0].aggregate(2) == pytest.approx(2e9)
    assert build_topology(split, 10 * MB).servers[0].aggregate(2) == pytest.approx(2e9 + 2e9 * 2 / 6)
    trace = _trace([[[0, 1]]])
    result = timed_replay(trace, split, TimedConfig(capacity_bytes=8 * MB))
    assert result.cells["stall_s"].iloc[0] == pytest.approx(2 * MB / (2e9 + 2e9 * 2 / 6), rel=1e-9)
