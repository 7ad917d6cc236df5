"""Model shapes from a Hugging Face config.json and from a GGUF header equal the catalog's.

The config.json bodies below carry the shape fields of each model's published file (the catalog
entry's `source` URL); the GGUF files are written here with gguf's own writer (no downloads).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from moesim.cli import main
from moesim.errors import UserError
from moesim.traces.models.catalog import load_model
from moesim.traces.models.model_files import load_model_any, load_model_guess, name_candidates, spec_from_hf_config

CONFIGS = {
    "qwen3-30b-a3b": {"model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48,
                      "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
                      "num_experts_per_tok": 8, "moe_intermediate_size": 768, "intermediate_size": 6144,
                      "vocab_size": 151936, "tie_word_embeddings": False, "decoder_sparse_step": 1,
                      "mlp_only_layers": [], "attention_bias": False},
    "olmoe-1b-7b": {"model_type": "olmoe", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
                    "num_key_value_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
                    "intermediate_size": 1024, "vocab_size": 50304, "tie_word_embeddings": False},
    "mixtral-8x7b": {"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
                     "intermediate_size": 14336, "vocab_size": 32000, "tie_word_embeddings": False},
    "deepseek-v3": {"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
                    "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
                    "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "intermediate_size": 18432,
                    "n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512,
                    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
                    "tie_word_embeddings": False, "topk_method": "noaux_tc",
                    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
    "gpt-oss-120b": {"model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 36, "num_attention_heads": 64,
                     "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 128, "num_experts_per_tok": 4,
                     "intermediate_size": 2880, "vocab_size": 201088, "tie_word_embeddings": False,
                     "sliding_window": 128, "attention_bias": True,
                     "layer_types": ["sliding_attention", "full_attention"] * 18,
                     "quantization_config": {"quant_method": "mxfp4"}},
    "qwen1.5-moe-a2.7b": {"model_type": "qwen2_moe", "hidden_size": 2048, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
                          "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
                          "shared_expert_intermediate_size": 5632, "intermediate_size": 5632,
                          "vocab_size": 151936, "tie_word_embeddings": False, "decoder_sparse_step": 1},
    "llama-4-maverick": {"model_type": "llama4_text", "hidden_size": 5120, "num_hidden_layers": 48,
                         "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
                         "num_local_experts": 128, "num_experts_per_tok": 1, "intermediate_size": 8192,
                         "intermediate_size_mlp": 16384, "interleave_moe_layer_step": 2, "vocab_size": 202048,
                         "tie_word_embeddings": False},
}
SHAPE_ONLY = ("name", "source", "description", "family", "sliding_window", "sliding_layers")


def _same_shapes(a, b) -> None:
    blank = {k: getattr(b, k) for k in SHAPE_ONLY}
    assert dataclasses.replace(a, **blank) == b


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_json_gives_the_catalog_spec(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS[name]))
    spec = spec_from_hf_config(path)
    catalog = load_model(name)
    _same_shapes(spec, catalog)
    assert spec.total_params() == catalog.total_params()


def test_gpt_oss_config_keeps_its_sliding_layers(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["gpt-oss-120b"]))
    spec = spec_from_hf_config(path)
    assert spec.sliding_window == 128 and spec.sliding_layers == tuple(range(0, 36, 2))
    assert spec.sliding_layers == load_model("gpt-oss-120b").sliding_layers


def test_config_json_errors_are_one_line(tmp_path: Path) -> None:
    dense = tmp_path / "config.json"
    dense.write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "vocab_size": 10, "intermediate_size": 16}))
    with pytest.raises(UserError, match="not a mixture-of-experts"):
        spec_from_hf_config(dense)
    broken = tmp_path / "bad.json"
    broken.write_text("{")
    with pytest.raises(UserError, match="cannot read config.json"):
        load_model_any(str(broken))


def test_trace_model_names_find_their_catalog_entry() -> None:
    assert load_model_guess("Qwen3-30B-A3B-Q4_K_M").spec.name == "qwen3-30b-a3b"  # type: ignore[union-attr]
    assert load_model_guess("google_gemma-4-26B-A4B-it-Q4_K_M").spec.name == "gemma-4-26b-a4b"  # type: ignore[union-attr]
    assert load_model_guess("no-such-model-7b") is None
    assert "gemma-4-26B-A4B" in name_candidates("google_gemma-4-26B-A4B-it-Q4_K_M")


# ---- GGUF ------------------------------------------------------------------------------------------
gguf = pytest.importorskip("gguf")


def _qwen3_header(path: Path, tensors: dict[str, tuple[np.ndarray, tuple[int, ...] | None, object]] | None = None,
                  **over: object) -> None:
    """Qwen3-30B-A3B's GGUF metadata (llama.cpp's convert_hf_to_gguf.py keys for qwen3moe)."""
    w = gguf.GGUFWriter(str(path), "qwen3moe")
    values = {"block_count": 48, "embedding_length": 2048, "feed_forward_length": 6144,
              "expert_feed_forward_length": 768, "expert_count": 128, "expert_used_count": 8,
              "attention.head_count": 32, "attention.head_count_kv": 4, "attention.key_length": 128,
              "attention.value_length": 128, "vocab_size": 151936}
    values.update(over)
    for key, value in values.items():
        w.add_uint32(f"qwen3moe.{key}", int(value))
    w.add_name("Qwen3-30B-A3B")
    for name, (data, raw_shape, raw_dtype) in (tensors or {}).items():
        w.add_tensor(name, data, raw_shape=raw_shape, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_header_gives_the_catalog_spec(tmp_path: Path) -> None:
    """Only the metadata and one per-head q norm (128 f32 values; its width says "per_head")."""
    path = tmp_path / "qwen3.gguf"
    norm = np.ones(128, dtype=np.float32)
    _qwen3_header(path, {"blk.0.attn_q_norm.weight": (norm, None, None)})
    loaded = load_model_any(str(path))
    assert loaded.origin == "gguf"
    _same_shapes(loaded.spec, load_model("qwen3-30b-a3b"))


def test_gguf_expert_tensors_give_per_layer_format_and_bytes(tmp_path: Path) -> None:
    """A 2-layer toy: hidden 64, 4 experts of 32. Layer 0's experts in q8_0 (34 B per 32 weights):
    3 x 32 x 64 weights x 34/32 = 6528 B per expert; layer 1's in f16: 3 x 2048 x 2 = 12288 B."""
    q8 = gguf.GGMLQuantizationType.Q8_0
    tensors = {
        "blk.0.ffn_gate_exps.weight": (np.zeros((4, 32, 68), np.uint8), None, q8),
        "blk.0.ffn_up_exps.weight": (np.zeros((4, 32, 68), np.uint8), None, q8),
        "blk.0.ffn_down_exps.weight": (np.zeros((4, 64, 34), np.uint8), None, q8),
        "blk.1.ffn_gate_exps.weight": (np.zeros((4, 32, 64), np.float16), None, None),
        "blk.1.ffn_up_exps.weight": (np.zeros((4, 32, 64), np.float16), None, None),
        "blk.1.ffn_down_exps.weight": (np.zeros((4, 64, 32), np.float16), None, None),
        "blk.0.attn_norm.weight": (np.ones(64, np.float32), None, None),
    }
    path = tmp_path / "toy.gguf"
    _qwen3_header(path, tensors, block_count=2, embedding_length=64, expert_feed_forward_length=32,
                  expert_count=4, expert_used_count=2, **{"attention.head_count": 4, "attention.head_count_kv": 2,
                                                          "attention.key_length": 16, "vocab_size": 100})
    loaded = load_model_any(str(path))
    assert loaded.expert_formats == ("q8_0", "fp16")
    assert loaded.expert_bytes == (6528, 12288)
    assert loaded.dense_bytes == (64 * 4, 0)
    assert loaded.spec.expert_params() == 3 * 64 * 32


def test_models_show_reads_a_gguf_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "qwen3.gguf"
    _qwen3_header(path)
    assert main(["models", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["total_params"] == load_model("qwen3-30b-a3b").total_params() - 2 * 128 * 48  # no q/k norm tensors
    assert main(["models", "show", str(tmp_path / "missing.gguf")]) == 1


def test_gguf_formats_reach_the_compute_model(tmp_path: Path) -> None:
    """`--model toy.gguf` on a 2-layer trace: layer 0's experts are timed as q8_0 (dequantised), layer 1's as fp16."""
    from moesim.sim.cost_model import resolve_model_spec
    from moesim.traces.format.build import simple_trace

    q8 = gguf.GGMLQuantizationType.Q8_0
    tensors = {f"blk.0.ffn_{m}_exps.weight": (np.zeros((4, 32, 68) if m != "down" else (4, 64, 34), np.uint8), None, q8)
               for m in ("gate", "up", "down")}
    tensors.update({f"blk.1.ffn_{m}_exps.weight": (np.zeros((4, 32, 64) if m != "down" else (4, 64, 32), np.float16),
                                                   None, None) for m in ("gate", "up", "down")})
    path = tmp_path / "toy.gguf"
    _qwen3_header(path, tensors, block_count=2, embedding_length=64, expert_feed_forward_length=32,
                  expert_count=4, expert_used_count=2, **{"attention.head_count": 4, "attention.head_count_kv": 2,
                                                          "attention.key_length": 16, "vocab_size": 100})
    trace = simple_trace([[[0, 1], [2, 3]]], n_layers=2, n_experts=4, object_bytes=[6528, 12288], top_k=2)
    spec, formats = resolve_model_spec(trace, str(path))
    assert formats == ("q8_0", "fp16") and spec is not None and spec.hidden_size == 64
