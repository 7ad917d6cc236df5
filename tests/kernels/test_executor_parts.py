"""Executor mechanics on CPU: random weights, host store, slot pool, copy stream, cell timer.

The central test drives the real cache core (LRU) cell by cell the way the GPU executor will, moving
data with SlotPool.load and computing from the slots; it checks the data movement is exact (every
slot holds its object's host bytes), the copies equal count_replay's misses, the outputs equal the
reference computed straight from the host store, and the write-after-read protocol was followed.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moesim.kernels.compute import compute_cell  # noqa: E402
from moesim.kernels.host_store import HostExpertStore  # noqa: E402
from moesim.kernels.reference import moe_reference  # noqa: E402
from moesim.kernels.shapes import ExpertShapes  # noqa: E402
from moesim.kernels.slot_pool import SlotPool  # noqa: E402
from moesim.kernels.streams import CellTimer, CopyStream, DeviceClock  # noqa: E402
from moesim.kernels.weights import expert_weights_f32, random_activations  # noqa: E402
from moesim.sim.cache_core import MISS_COMPULSORY  # noqa: E402
from moesim.sim.count_replay import ReplayConfig, count_replay, make_core  # noqa: E402
from moesim.sim.requests import build_request_stream  # noqa: E402
from moesim.traces.models.model_spec import ModelSpec  # noqa: E402
from moesim.traces.format.trace_meta import PREFILL  # noqa: E402
from moesim.traces.format.build import simple_trace

SHAPES = ExpertShapes(hidden=16, inter=8, n_layers=2, n_experts=6, dtype="fp32")


def test_shapes_from_olmoe_spec_match_the_published_expert_size():
    spec = ModelSpec(name="olmoe", family="olmoe", n_layers=16, moe_layers=tuple(range(16)), n_routed_experts=64,
                     top_k=8, hidden_size=2048, moe_intermediate_size=1024)
    shapes = ExpertShapes.from_model_spec(spec)
    assert shapes.expert_bytes == 12582912 == spec.expert_bytes("bf16")  # hardware.md §5: 12.0 MiB
    assert shapes.n_objects == 1024 and shapes.obj(3, 5) == 197
    assert (shapes.layer_of(197), shapes.expert_of(197)) == (3, 5)


def test_weights_are_seeded_per_object_and_scaled_by_fan_in():
    shapes = ExpertShapes(hidden=256, inter=64, n_layers=1, n_experts=4, dtype="fp32")
    a = expert_weights_f32(shapes, 2, seed=7)
    np.testing.assert_array_equal(a, expert_weights_f32(shapes, 2, seed=7))
    assert not np.array_equal(a, expert_weights_f32(shapes, 3, seed=7))
    assert not np.array_equal(a, expert_weights_f32(shapes, 2, seed=8))
    n = shapes.matrix_elems
    assert abs(a[: 2 * n].std() - 1 / 16) < 0.01  # 1/sqrt(256)
    assert abs(a[2 * n:].std() - 1 / 8) < 0.01  # 1/sqrt(64)
    x = random_activations(5, 256, seed=1)
    assert x.shape == (5, 256) and x.dtype == np.float32
    np.testing.assert_array_equal(x, random_activations(5, 256, seed=1))


def test_host_store_buffers_do_not_depend_on_which_objects_were_built():
    shapes = ExpertShapes(hidden=16, inter=8, n_layers=2, n_experts=3, dtype="bf16")
    full = HostExpertStore(shapes, seed=3, pin=False)
    part = HostExpertStore(shapes, seed=3, objects=[4, 1], pin=False)
    assert part.objects == [1, 4] and not part.pinned
    assert torch.equal(full.buffer(4), part.buffer(4))
    assert full.buffer(4).is_contiguous() and full.nbytes(4) == shapes.expert_bytes
    gate, up, down = full.views(4)
    assert gate.shape == (16, 8) and down.shape == (8, 16)
    assert torch.equal(down.reshape(-1), full.buffer(4)[2 * 128:])
    with pytest.raises(KeyError):
        part.buffer(0)


def test_placement_reuses_the_victims_slot_else_the_lowest_free_one():
    pool = SlotPool(SHAPES, n_slots=3, device="cpu", n_spare=1)
    assert [pool.place(o)[0] for o in (5, 2, 9)] == [0, 1, 2]
    assert pool.place(2) == (1, False)  # resident: no copy
    assert pool.place(7, victims=[9]) == (2, True)
    pool.evict(5)
    assert pool.place(11) == (0, True)
    with pytest.raises(RuntimeError):
        pool.place(10, victims=[11], slot=1)  # a planner-named slot must be free (or a victim's)
    assert pool.slot_of[11] == 0  # refused before evicting anything
    assert pool.place(10, victims=[11], slot=0) == (0, True) and pool.slot_of[11] == -1
    assert pool.stage(4) == 3 and pool.slot_of[4] == 3
    pool.release_staged()
    assert pool.slot_of[4] == -1
    with pytest.raises(RuntimeError):
        pool.place(1)
    pool.check()


def test_random_action_stream_keeps_tables_consistent_and_slots_exact():
    """sortedcontainers-style: random admits/evicts/stages under a fixed seed, invariants after each."""
    rng = random.Random(11)
    store = HostExpertStore(SHAPES, seed=5, pin=False)
    pool = SlotPool(SHAPES, n_slots=4, device="cpu", n_spare=2)
    copies = CopyStream("cpu")
    model: set[int] = set()  # the resident set the caller intends
    for _ in range(300):
        action = rng.random()
        absent = [o for o in range(SHAPES.n_objects) if o not in model]
        if action < 0.6 and absent:
            obj = rng.choice(absent)
            victims = rng.sample(sorted(model), 1) if len(model) == 4 else []
            pool.load(obj, store, copies, victims=victims)
            model.difference_update(victims)
            model.add(obj)
        elif action < 0.8 and model:
            obj = rng.choice(sorted(model))
            pool.evict(obj)
            model.discard(obj)
        elif action < 0.9 and absent and (pool.obj_in[pool.n_slots:] < 0).any():
            pool.load(rng.choice(absent), store, copies, staged=True)
        else:
            pool.release_staged()
        pool.check()
        assert set(pool.resident()) == model
        for obj, slot in pool.resident().items():
            assert torch.equal(pool.pool[slot], store.buffer(obj))


def routing_trace(n_passes=8, tokens=3, top_k=2, seed=0):
    rng = np.random.default_rng(seed)
    cells = [[[int(e) for _ in range(tokens) for e in rng.choice(SHAPES.n_experts, top_k, replace=False)]
              for _ in range(SHAPES.n_layers)] for _ in range(n_passes)]
    return simple_trace(cells, SHAPES.n_layers, SHAPES.n_experts, object_bytes=SHAPES.expert_bytes,
                        top_k=top_k, phases=[PREFILL] * n_passes)


def replay_on_slots(trace, capacity_slots, backend, max_cells=None):
    """The executor loop over the real cache core, returning what a test needs to check it."""
    config = ReplayConfig(policy="lru", capacity_bytes=capacity_slots * SHAPES.expert_bytes)
    stream = build_request_stream(trace, "event")
    core, _, _ = make_core(trace, config, stream)
    store = HostExpertStore(SHAPES, seed=2, pin=False)
    pool = SlotPool.for_capacity(SHAPES, config.capacity_bytes, "cpu", n_spare=2)
    copies = CopyStream("cpu", log=True)
    timer = CellTimer(copies.clock)
    cell_pass = trace.cell_pass()
    rng = np.random.default_rng(4)
    n_cells = trace.n_cells if max_cells is None else max_cells
    for c in range(n_cells):
        if c == 0 or cell_pass[c] != cell_pass[c - 1]:
            core.begin_pass(int(cell_pass[c]))
        objs = stream.obj[stream.cell_offsets[c]:stream.cell_offsets[c + 1]].tolist()
        for obj, outcome in zip(objs, core.begin_cell(objs)):
            if outcome >= MISS_COMPULSORY:
                victims = core.admit(obj)
                if victims is None:
                    pool.load(obj, store, copies, staged=True)
                else:
                    pool.load(obj, store, copies, victims=victims)
                    core.fill(obj)
        assert set(pool.resident()) == set(core.resident_objects())
        for obj, slot in pool.resident().items():
            assert torch.equal(pool.pool[slot], store.buffer(obj))
        layer = int(trace.cell_layer[c])
        ids = torch.from_numpy(trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]].astype(np.int64))
        ids = ids.view(-1, trace.meta.top_k)
        w = torch.from_numpy(rng.random(ids.shape, dtype=np.float32))
        x = torch.from_numpy(rng.standard_normal((ids.shape[0], SHAPES.hidden), dtype=np.float32))
        y = compute_cell(pool, layer, x, ids, w, copies, backend=backend, timer=timer, key=c)
        ref = moe_reference(x, ids, w, lambda e, layer=layer: store.views(SHAPES.obj(layer, e)))
        assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5
        core.end_cell(objs)
        pool.release_staged()
        pool.check()
    return copies, timer, config


def test_executor_loop_moves_exactly_the_misses_and_computes_from_the_slots():
    trace = routing_trace()
    copies, timer, config = replay_on_slots(trace, capacity_slots=4, backend="torch")
    counted = count_replay(trace, config)
    misses = int((counted.outcomes >= MISS_COMPULSORY).sum())
    assert misses > 0 and counted.bypassed.any()  # capacity 4 < 6 distinct experts in some cells
    assert len(copies.records) == misses
    assert sum(r.nbytes for r in copies.records) == misses * SHAPES.expert_bytes
    spans = timer.seconds()
    assert all(v >= 0 for v in spans.values())
    assert {("compute", c) for c in range(trace.n_cells)} <= set(spans)
    check_hazard_protocol(copies.log)


def check_hazard_protocol(log):
    """Every copy into a read slot waited for that slot's last read; every read waited for the last copy."""
    last_read, waited_free, last_copy, waited_ready = {}, {}, {}, {}
    n_checked = 0
    for entry in log:
        kind = entry[0]
        if kind == "read":
            _, slot, seq = entry
            if slot in last_copy:
                assert waited_ready.get(slot) == last_copy[slot], f"slot {slot} read before its copy was awaited"
            last_read[slot] = seq
        elif kind == "wait_free":
            waited_free[entry[1]] = entry[2]
        elif kind == "copy":
            _, slot, _, end_seq = entry
            if slot in last_read:
                assert waited_free.get(slot) == last_read[slot], f"slot {slot} overwritten before its last read"
                n_checked += 1
            last_copy[slot] = end_seq
        elif kind == "wait_ready":
            waited_ready[entry[1]] = entry[2]
    assert n_checked > 0  # the trace did reuse slots


def test_executor_loop_with_the_triton_kernel_under_the_interpreter(device):
    if device.type != "cpu":
        pytest.skip("the loop test uses CPU tensors")
    trace = routing_trace(n_passes=2)
    copies, _, _ = replay_on_slots(trace, capacity_slots=3, backend="triton", max_cells=3)
    assert copies.records


def test_cpu_events_are_monotonic_and_copies_have_a_duration():
    clock = DeviceClock("cpu")
    a, b = clock.record(), clock.record()
    assert b.seq == a.seq + 1 and a.seconds_until(b) >= 0 and a.done()
    copies = CopyStream("cpu", clock=clock)
    dst = torch.zeros(1000)
    rec = copies.copy(dst, torch.arange(1000.0), slot=0, tag="x")
    assert torch.equal(dst, torch.arange(1000.0)) and rec.nbytes == 4000 and rec.seconds() >= 0


@pytest.mark.gpu
def test_async_loop_on_cuda_never_overwrites_a_slot_before_its_reader_ran():
    """Many cells enqueued without host syncs: copies on the side stream, kernels on the compute stream.

    Few slots and big experts make every cell evict what the previous cell's kernel is still
    reading; without the write-after-read wait the outputs would mix experts.
    """
    shapes = ExpertShapes(hidden=1024, inter=512, n_layers=1, n_experts=16, dtype="bf16")
    dev = torch.device("cuda")
    store = HostExpertStore(shapes, seed=9)
    assert store.pinned
    pool = SlotPool(shapes, n_slots=6, device=dev, n_spare=0)
    copies = CopyStream(dev)
    timer = CellTimer(copies.clock)
    rng = np.random.default_rng(3)
    resident: list[int] = []  # LRU order, oldest first
    results = []
    for cell in range(40):
        experts = rng.choice(shapes.n_experts, 4, replace=False).tolist()
        for e in experts:
            if e in resident:
                resident.remove(e)
                resident.append(e)
                continue
            victims = []
            if len(resident) == pool.n_slots:
                victims = [next(v for v in resident if v not in experts)]
                resident.remove(victims[0])
            pool.load(e, store, copies, victims=victims)
            resident.append(e)
        ids = torch.from_numpy(rng.choice(experts, (8, 2)).astype(np.int64))
        w = torch.from_numpy(rng.random((8, 2), dtype=np.float32))
        x = torch.from_numpy(rng.standard_normal((8, shapes.hidden), dtype=np.float32)).to(dev, torch.bfloat16)
        y = compute_cell(pool, 0, x, ids, w, copies, timer=timer, key=cell)
        results.append((x, ids, w, y))
    torch.cuda.synchronize()
    for x, ids, w, y in results:
        ref = moe_reference(x.float(), ids, w, lambda e: tuple(t.to(dev) for t in store.views(e)),
                            compute_dtype=torch.float32)
        assert float((y.float() - ref).abs().max() / ref.abs().max()) < 3e-2
    spans = timer.seconds()
    assert all(v >= 0 for v in spans.values()) and len(copies.records) > 40
