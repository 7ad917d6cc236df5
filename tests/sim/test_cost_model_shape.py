"""What sim/cost_model.py reads from a model, and its CPU-expert time, checked by hand.

resolve_model_shape: a catalog model's shapes (OLMoE-1B-7B: hidden 2048, moe_intermediate 1024, a MoE
layer's dense weights 16,916,480, derived in tests/traces/test_catalog.py from the published config),
the trace's own sizes where it carries them, and the bf16 fallback (params = object bytes // 2) where
the model is unknown. (The cost model is being rebuilt by operator; these pin what it reads today.)
"""

from __future__ import annotations

import sys

import pytest

from moesim.errors import UserError
from moesim.sim.cost_model import resolve_model_shape
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace

from timing_helpers import MB, US, hand_profile

OLMOE_EXPERT = 3 * 2048 * 1024
OLMOE_DENSE = 16_916_480


def _trace(model=None, dense=None, object_bytes=MB):
    trace = simple_trace([[[0], [1]]], n_layers=2, n_experts=4, object_bytes=object_bytes)
    trace.meta.model = model
    trace.meta.dense_bytes = dense
    return trace


def test_catalog_model_named_by_the_caller():
    shape = resolve_model_shape(_trace(), "olmoe-1b-7b")
    assert shape.expert_params == (OLMOE_EXPERT, OLMOE_EXPERT)
    assert shape.dense_bytes == (2 * OLMOE_DENSE, 2 * OLMOE_DENSE)  # bf16
    assert shape.dense_flops_per_token == (2.0 * OLMOE_DENSE, 2.0 * OLMOE_DENSE)
    assert shape.hidden_size == 2048 and shape.activation_bytes_per_token() == 4096
    assert shape.source == "model spec olmoe-1b-7b"


def test_catalog_model_named_by_the_trace_and_the_trace_own_dense_bytes_win():
    shape = resolve_model_shape(_trace(model="olmoe-1b-7b", dense=[5, 7]))
    assert shape.expert_params == (OLMOE_EXPERT, OLMOE_EXPERT)
    assert shape.dense_bytes == (5, 7)
    assert shape.dense_flops_per_token == (2.0 * OLMOE_DENSE, 2.0 * OLMOE_DENSE)  # FLOPs still from the shapes


def test_unknown_trace_model_falls_back_to_the_trace_bytes():
    """1,000,001-byte objects: 500,000 params each (floor of bytes / 2); no dense bytes: 0;
    width sqrt(500,000 / 3) = 408."""
    shape = resolve_model_shape(_trace(model="no-such-model", object_bytes=1_000_001))
    assert shape.expert_params == (500_000, 500_000)
    assert shape.dense_bytes == (0, 0) and shape.dense_flops_per_token == (0.0, 0.0)
    assert shape.hidden_size == 408
    assert shape.source == "trace object bytes (bf16 assumed)"
    assert resolve_model_shape(_trace(object_bytes=1)).expert_params == (1, 1)  # never 0 params


def test_a_model_the_caller_names_must_exist():
    """The catalog's own one-line error passes through unchanged."""
    from moesim.traces.models.catalog import load_model

    with pytest.raises(UserError) as err:
        resolve_model_shape(_trace(), "no-such-model")
    with pytest.raises(UserError) as direct:
        load_model("no-such-model")
    assert "no-such-model" in str(err.value) and str(err.value) == str(direct.value)


def test_a_catalog_failure_on_a_named_model_is_one_user_error(monkeypatch):
    import moesim.traces.models.catalog as catalog

    def broken(name):
        raise KeyError("experts")

    monkeypatch.setattr(catalog, "load_model", broken)
    with pytest.raises(UserError) as err:
        resolve_model_shape(_trace(), "olmoe-1b-7b")
    assert (err.value.message, err.value.where) == ("cannot load model 'olmoe-1b-7b': 'experts'", "--model")
    # the same failure for a model only the trace names: its own sizes are used
    assert resolve_model_shape(_trace(model="olmoe-1b-7b")).source == "trace object bytes (bf16 assumed)"


def test_without_the_catalog_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "moesim.traces.models.catalog", None)  # import raises ModuleNotFoundError
    with pytest.raises(UserError) as err:
        resolve_model_shape(_trace(), "olmoe-1b-7b")
    assert (err.value.message, err.value.where) == (
        "the model catalog (moesim.traces.models.catalog) is not installed", "--model")
    assert resolve_model_shape(_trace(model="olmoe-1b-7b")).expert_params == (MB // 2, MB // 2)


@pytest.mark.parametrize("cpu_flops,cpu_bw", [(None, 1e10), (1e12, None), (None, None)])
def test_cpu_handler_needs_both_cpu_figures(cpu_flops, cpu_bw):
    trace = simple_trace([[[0, 1]]], n_layers=1, n_experts=4, object_bytes=MB, top_k=2)
    trace.meta.model = None
    with pytest.raises(UserError) as err:
        timed_replay(trace, hand_profile(cpu_flops=cpu_flops, cpu_bw=cpu_bw), TimedConfig(miss="cpu", capacity_bytes=0))
    assert err.value.message == ("running experts on the CPU needs a cpu processor (compute.cpu_flops and "
                                 "compute.cpu_memory_bandwidth, or processors.cpu)")
    assert err.value.where == "profile test"


def test_cpu_time_lands_only_in_the_cells_that_run_experts_on_the_cpu():
    """cpu:max_tokens=1, capacity 4 objects. Cells 0 and 1 (1 token -> 0, 1) run both on the CPU (never
    admitted): 2 MB at 10 GB/s = 200 us plus 10.816 us of activations each way (test_timing_miss_handling's
    figures); cell 2 (2 tokens -> 2, 3 each) fetches 2 and 3; cell 3 (1 token -> 2, 3) hits both."""
    trace = simple_trace([[[0, 1]], [[0, 1]], [[2, 3, 2, 3]], [[2, 3]]], n_layers=1, n_experts=4, object_bytes=MB,
                         top_k=2, phases=[DECODE, DECODE, PREFILL, DECODE])
    trace.meta.model = None
    result = timed_replay(trace, hand_profile(cpu_flops=1e12, cpu_bw=1e10),
                          TimedConfig(miss="cpu:max_tokens=1", capacity_bytes=4 * MB))
    cpu = (200 + 2 * 10.816) * US
    assert result.cells["cpu_s"].tolist() == pytest.approx([cpu, cpu, 0.0, 0.0], abs=1e-12)
    assert result.cells["hits"].tolist() == [0, 0, 0, 2]
