"""What advise replays: the bundled trace where one exists, a synthetic one (said so) otherwise, and
the memory the model needs beside its experts, by hand."""

from __future__ import annotations

from moesim.advise.workload import kv_cache_bytes, load_spec, resolve_workload


def test_kv_cache_by_hand():
    # Qwen3-30B-A3B: 48 layers, 4 kv heads x 128, K and V, f16: 2*4*128*2 B = 2 KiB per layer and token
    assert kv_cache_bytes("qwen3-30b-a3b", load_spec("qwen3-30b-a3b"), 156, 1) == 2 * 4 * 128 * 48 * 156 * 2
    # DeepSeek-V3 (MLA): 61 layers cache a 512-wide latent and a 64-wide rope key per token
    assert kv_cache_bytes("deepseek-v3", load_spec("deepseek-v3"), 1000, 2) == 61 * (512 + 64) * 1000 * 2 * 2


def test_bundled_trace_of_the_model_is_used_and_named():
    w = resolve_workload("qwen3-30b-a3b")
    assert not w.synthetic and w.trace_label.startswith("bundled:qwen")
    assert (w.prompt, w.decode, w.batch) == (28, 128, 1)
    # dense weights: the trace's Q4 layer bytes plus embeddings and LM head at the same bytes per parameter
    assert sum(w.trace.meta.dense_bytes) < w.dense_bytes < w.expert_bytes


def test_asked_lengths_that_differ_give_a_synthetic_trace_fitted_to_the_model_s_own(tmp_path, monkeypatch):
    monkeypatch.setenv("MOESIM_CACHE", str(tmp_path))
    w = resolve_workload("qwen3-30b-a3b", prompt=8, decode=4)
    assert w.synthetic and "bundled:qwen" in w.trace_label and "bundled:gemma" not in w.trace_label
    assert (w.prompt, w.decode) == (8, 4)
    assert any("synthetic trace" in x for x in w.warnings)
    assert list(tmp_path.glob("advise-fits/qwen-*.yaml"))  # the fit is cached for the next run
