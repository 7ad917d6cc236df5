"""The real-GPU executor on CPU: the simulator's decisions, exact data movement, exact outputs.

References, all independent of the executor's own bookkeeping:
- decisions: the simulator's flat Plan from timed_replay on the same trace, profile and config
  (hits, miss kinds, copies with bytes/route/prefetch/residency, victims, in the same order);
- data movement: after every cell each object the cache core holds must sit in a VRAM slot (and,
  where DRAM caches SSD, a DRAM slot) holding exactly its host bytes (`check=True` asserts it);
- outputs: a float64 torch loop over experts built straight from the seeded weights
  (moesim.kernels.weights), not from any slot;
- hazards: the copy stream's log must show every slot write after the slot's last read and every
  read after the slot's latest write.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from timing_helpers import make_profile, random_trace  # noqa: E402

from moesim.errors import UserError  # noqa: E402
from moesim.kernels.decision_log import DecisionLog  # noqa: E402
from moesim.kernels.executor import cache_slots, execute, shapes_for_trace  # noqa: E402
from moesim.kernels.reference import moe_reference  # noqa: E402
from moesim.kernels.shapes import ExpertShapes  # noqa: E402
from moesim.kernels.weights import expert_weights_f32, random_activations  # noqa: E402
from moesim.sim.timed_replay import TimedConfig, timed_replay  # noqa: E402
from moesim.traces.format.trace_meta import PREFILL  # noqa: E402
from moesim.traces.format.build import simple_trace

GB = 1e9
SHAPES = ExpertShapes(hidden=32, inter=16, n_layers=3, n_experts=6, dtype="fp32")
SLOW = dict(memory_bandwidth=1e9, peak_flops=1e12)  # compute windows long enough for prefetch budgets


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's intra-op thread pool costs milliseconds per op on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trace_for(shapes: ExpertShapes = SHAPES, seed: int = 1, **kw):
    return random_trace(seed, n_layers=shapes.n_layers, n_experts=shapes.n_experts,
                        object_bytes=shapes.expert_bytes, **kw)


PROFILES = {
    "h2d": lambda: make_profile(host_bw=0.01 * GB, host_latency=1e-6, **SLOW),
    # DRAM holds 8 of 18 objects: they live on SSD and DRAM caches them (ssd -> dram -> vram)
    "ssd+dram": lambda: make_profile(host_bw=0.01 * GB, dram=8 * SHAPES.expert_bytes, ssd_bw=0.005 * GB, **SLOW),
    # unified memory: reads from flash land in the cache tier (ssd -> vram)
    "unified": lambda: make_profile(unified=True, ssd_bw=0.01 * GB, **SLOW),
}


def run_both(trace, profile, config, **kw):
    result = execute(trace, profile, config, device="cpu", shapes_override=kw.pop("shapes", SHAPES),
                     backend=kw.pop("backend", "torch"), check=True, **kw)
    sim = timed_replay(trace, profile, config)
    return result, sim


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("prefetch", ["none", "oracle", "score-budget"])
@pytest.mark.parametrize("eviction", ["lru", "least-stale", "belady", "lfu", "random"])
def test_decisions_equal_the_simulators_in_order(eviction, prefetch, scope):
    trace = trace_for()
    config = TimedConfig(eviction=eviction, prefetch=prefetch, scope=scope,
                         capacity_bytes=int(trace.total_object_bytes() * 0.3))
    result, sim = run_both(trace, PROFILES["h2d"](), config)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    counts = result.decisions.counts()
    assert counts["evictions"] > 0 and counts["misses"] > 0 and counts["hits"] > 0
    assert (counts["prefetch_copies"] > 0) == (prefetch != "none")
    s = sim.summary
    assert counts["hits"] + counts["misses"] == s["hits"] + s["late_prefetch"] + s["misses"]
    assert counts["bytes"] == sum(link["bytes"] for link in sim.summary["links"].values())
    assert result.checked_cells == trace.n_cells  # slots matched host bytes after every cell
    assert result.summary["moved_equals_planned"]
    check_hazards(result.hazard_log)


@pytest.mark.parametrize("tier", ["ssd+dram", "unified"])
@pytest.mark.parametrize("prefetch", ["none", "oracle", "score-budget"])
def test_decisions_and_data_through_ssd_tiers(tier, prefetch):
    trace = trace_for()
    config = TimedConfig(eviction="lru", prefetch=prefetch, capacity_bytes=int(trace.total_object_bytes() * 0.3))
    result, sim = run_both(trace, PROFILES[tier](), config)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    routes = result.decisions.counts()["routes"]
    assert set(routes) == ({"host", "ssd_dram"} if tier == "ssd+dram" else {"ssd_vram"})
    assert result.checked_cells == trace.n_cells  # VRAM and DRAM slots hold their objects' bytes
    if tier == "ssd+dram":
        assert sim.summary["dram"]["evictions"] > 0  # the DRAM tier really cached (and evicted)


def test_two_copy_engines_share_one_slot_table():
    """A profile with two H2D copy engines gets two side streams over one pool; every hazard rule holds."""
    trace = trace_for()
    profile = make_profile(host_bw=0.01 * GB, host_engines=2, **SLOW)
    config = TimedConfig(prefetch="oracle", capacity_bytes=int(trace.total_object_bytes() * 0.3))
    result, sim = run_both(trace, profile, config)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    assert result.checked_cells == trace.n_cells
    check_hazards(result.hazard_log)


def test_pinned_objects_load_before_the_first_cell_and_match():
    trace = trace_for()
    config = TimedConfig(eviction="static-hot:profile_passes=3:share=0.5",
                         capacity_bytes=int(trace.total_object_bytes() * 0.4))
    result, sim = run_both(trace, PROFILES["h2d"](), config)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    assert (result.decisions.copy_cell == -1).sum() == sim.plan.n_setup_copies > 0


def test_cpu_miss_handler_runs_missing_experts_on_the_host_with_the_same_outputs():
    trace = trace_for()
    profile = make_profile(host_bw=0.01 * GB, cpu_flops=1e11, cpu_bw=1e10, **SLOW)
    config = TimedConfig(miss="cpu:max_tokens=1", capacity_bytes=int(trace.total_object_bytes() * 0.3))
    result, sim = run_both(trace, profile, config, keep_outputs=True)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    assert (sim.plan.cpu_tokens > 0).any() and result.summary["time"]["cpu_s"] > 0
    assert_outputs_match_reference(trace, result, SHAPES, seed=0)


def test_outputs_equal_a_reference_built_from_the_seeded_weights():
    trace = trace_for()
    config = TimedConfig(eviction="lru", prefetch="oracle", capacity_bytes=int(trace.total_object_bytes() * 0.2))
    result = execute(trace, PROFILES["h2d"](), config, device="cpu", shapes_override=SHAPES, backend="torch",
                     seed=5, keep_outputs=True)
    assert result.decisions.counts()["streamed_copies"] > 0  # some misses went through spare slots
    assert_outputs_match_reference(trace, result, SHAPES, seed=5)


def test_the_triton_kernel_under_the_interpreter_gives_the_same_outputs():
    shapes = ExpertShapes(hidden=32, inter=16, n_layers=2, n_experts=4, dtype="fp16")
    trace = random_trace(3, n_layers=2, n_experts=4, requests=1, prompt=2, decode=1,
                         object_bytes=shapes.expert_bytes)
    config = TimedConfig(capacity_bytes=int(trace.total_object_bytes() * 0.5))
    result = execute(trace, PROFILES["h2d"](), config, device="cpu", shapes_override=shapes, backend="triton",
                     keep_outputs=True, check=True)
    assert result.backend == "triton"
    assert_outputs_match_reference(trace, result, shapes, seed=0, tol=2e-3)


def test_timings_are_reported_per_cell_pass_and_request():
    trace = trace_for()
    config = TimedConfig(capacity_bytes=int(trace.total_object_bytes() * 0.3))
    result = execute(trace, PROFILES["h2d"](), config, device="cpu", shapes_override=SHAPES, backend="torch")
    cells = result.cells
    assert len(cells) == trace.n_cells
    assert (np.diff(cells["start_s"]) >= 0).all() and (cells["end_s"] >= cells["ready_s"]).all()
    assert (cells["ready_s"] >= cells["gate_s"]).all() and (cells["gate_s"] >= cells["start_s"]).all()
    assert result.passes["step_s"].sum() == pytest.approx(cells["end_s"].iloc[-1])
    passes = result.passes
    assert (passes["gap_s"] >= 0).all() and (passes["gap_s"] <= passes["step_s"] + 1e-12).all()
    assert len(result.requests) == 2 and result.requests["ttft_s"].gt(0).all()
    assert result.summary["timings_meaningful"] is False and "mean nothing" in result.summary["note"]
    assert len(result.copies) == result.decisions.n_copies
    assert result.summary["h2d"]["copies"] == result.decisions.counts()["copies"]


def test_moved_bytes_differ_from_planned_when_the_shapes_are_overridden():
    trace = trace_for()  # planned bytes are SHAPES' expert bytes
    small = ExpertShapes(hidden=16, inter=8, n_layers=3, n_experts=6, dtype="fp32")
    result = execute(trace, PROFILES["h2d"](), TimedConfig(capacity_bytes=int(trace.total_object_bytes() * 0.3)),
                     device="cpu", shapes_override=small, backend="torch")
    assert not result.summary["moved_equals_planned"]
    assert result.summary["moved"]["host"]["bytes"] == result.decisions.n_copies * small.expert_bytes


def test_cache_slots_cover_what_the_core_can_hold():
    trace = trace_for()
    b = SHAPES.expert_bytes
    assert cache_slots(trace, TimedConfig(capacity_bytes=5 * b + b // 2)) == 5
    assert cache_slots(trace, TimedConfig(capacity_bytes=6 * b, scope="layer")) == 6  # 2 per layer
    assert cache_slots(trace, TimedConfig(capacity_bytes=100 * b)) == trace.n_objects


def test_refuses_what_it_cannot_reproduce():
    trace = trace_for()
    profile = PROFILES["h2d"]()
    cap = int(trace.total_object_bytes() * 0.3)
    for config, field in [(TimedConfig(miss="lowbit", capacity_bytes=cap), "--miss"),
                          (TimedConfig(miss="drop", capacity_bytes=cap), "--miss"),
                          (TimedConfig(cancel_unstarted=True, capacity_bytes=cap), "config")]:
        with pytest.raises(UserError, match=field):
            execute(trace, profile, config, device="cpu", shapes_override=SHAPES)
    with pytest.raises(UserError, match="--device"):
        execute(trace, profile, TimedConfig(capacity_bytes=cap), device="tpu", shapes_override=SHAPES)
    with pytest.raises(UserError, match="names no model"):
        shapes_for_trace(trace)  # random_trace carries no model name
    with pytest.raises(UserError, match="64 experts"):
        shapes_for_trace(trace, "olmoe-1b-7b")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            execute(trace, profile, TimedConfig(capacity_bytes=cap), device="cuda", shapes_override=SHAPES)


def test_shapes_come_from_the_catalog_model():
    trace = simple_trace([[[0, 1] * 4]], n_layers=1, n_experts=64, object_bytes=1, top_k=8)
    shapes = shapes_for_trace(trace, "olmoe-1b-7b")
    assert (shapes.hidden, shapes.inter, shapes.n_layers, shapes.n_experts) == (2048, 1024, 1, 64)
    assert shapes.expert_bytes == 12582912  # hardware.md §5: 12.0 MiB per OLMoE expert in bf16


# ---- helpers -----------------------------------------------------------------------------------
def assert_outputs_match_reference(trace, result, shapes, seed, tol=1e-5):
    """Every cell's output equals the float64 expert loop over weights rebuilt from the seed."""
    x_all = torch.from_numpy(random_activations(int(trace.cell_tokens.max()), shapes.hidden, seed))
    dtype = shapes.torch_dtype()
    assert len(result.outputs) == trace.n_cells
    n = shapes.matrix_elems
    h, i = shapes.hidden, shapes.inter
    for c in range(trace.n_cells):
        t = int(trace.cell_tokens[c])
        lo, hi = int(trace.cell_offsets[c]), int(trace.cell_offsets[c + 1])
        ids = torch.from_numpy(trace.expert[lo:hi].astype(np.int64).reshape(t, -1))
        k = ids.shape[1]
        w = (torch.from_numpy(trace.weight[lo:hi].astype(np.float32).reshape(t, k)) if trace.weight is not None
             else torch.full((t, k), 1.0 / k))
        layer = int(trace.cell_layer[c])

        def weights_of(e, layer=layer):
            flat = torch.from_numpy(expert_weights_f32(shapes, shapes.obj(layer, e), seed)).to(dtype).double()
            return flat[:n].view(h, i), flat[n:2 * n].view(h, i), flat[2 * n:].view(i, h)

        x = x_all[:t].to(dtype)
        ref = moe_reference(x, ids, w, weights_of)
        got = torch.from_numpy(result.outputs[c]).double()
        err = float((got - ref).abs().max() / ref.abs().max())
        assert err < tol, f"cell {c}: relative error {err}"


def check_hazards(log):
    """Writes after the slot's last read, reads after the slot's latest write (the CopyStream protocol)."""
    last_read, waited_free, last_copy, waited_ready = {}, {}, {}, {}
    reused = 0
    for entry in log:
        kind = entry[0]
        if kind == "read":
            _, slot, seq = entry
            if slot in last_copy:
                assert waited_ready.get(slot) == last_copy[slot], f"slot {slot} read before its copy was awaited"
            last_read[slot] = seq
        elif kind == "wait_free":
            waited_free[entry[1]] = entry[2]
        elif kind == "copy" and entry[1] is not None:
            _, slot, _, end_seq = entry
            if slot in last_read:
                assert waited_free.get(slot) == last_read[slot], f"slot {slot} overwritten before its last read"
                reused += 1
            last_copy[slot] = end_seq
        elif kind == "wait_ready":
            waited_ready[entry[1]] = entry[2]
    assert reused > 0


# ---- on a GPU ----------------------------------------------------------------------------------
def olmoe_trace(n_layers=2, passes=6, seed=0):
    rng = np.random.default_rng(seed)
    cells = [[[int(e) for e in rng.choice(64, 8, replace=False)] * 1 for _ in range(n_layers)] for _ in range(passes)]
    trace = simple_trace(cells, n_layers=n_layers, n_experts=64, object_bytes=12582912, top_k=8,
                         phases=[PREFILL] + [1] * (passes - 1))
    trace.meta.model = "olmoe-1b-7b"
    return trace


@pytest.mark.gpu
@pytest.mark.parametrize("prefetch", ["none", "oracle"])
def test_on_cuda_real_shapes_decisions_data_and_outputs(prefetch):
    trace = olmoe_trace()
    profile = make_profile(host_bw=25 * GB, host_latency=10e-6, memory_bandwidth=2e12, peak_flops=5e14)
    config = TimedConfig(eviction="lru", prefetch=prefetch, capacity_bytes=int(trace.total_object_bytes() * 0.25))
    result = execute(trace, profile, config, device="cuda", check=True, keep_outputs=True, telemetry=True)
    sim = timed_replay(trace, profile, config)
    assert result.decisions.first_difference(DecisionLog.from_plan(sim.plan)) is None
    assert result.summary["moved_equals_planned"] and result.checked_cells == trace.n_cells
    assert result.summary["h2d"]["throughput_Bps"] > 1e9
    assert (result.cells["expert_s"] > 0).all()
    assert_outputs_match_reference(trace, result, result.shapes, seed=0, tol=3e-2)
