"""The recorder against routing computed independently from the models' own router logits.

Every supported architecture gets a tiny randomly initialised model (seeded, 3 layers, hidden 32),
saved with save_pretrained and loaded back the way users load theirs. The reference is a fresh,
cache-free forward over each finished sequence: the router logits are computed by hand from the
residual stream (`output_hidden_states` plus the attention outputs), and the top-k experts and
weights from those logits with each architecture's published routing rule (written out below, not
taken from moesim); they must equal what the recorder stored, token by token, in rank order. The
gate-lookahead predictions are checked against the later layers' norms and routers applied by hand
to the same residual stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moesim.cli import main  # noqa: E402
from moesim.errors import UserError  # noqa: E402
from moesim.traces.record.recorder import RecordConfig, record, record_model  # noqa: E402
from moesim.traces.record.hf_model import load_model, supported_architectures  # noqa: E402
from moesim.traces.format.trace_meta import DECODE, PREFILL  # noqa: E402

VOCAB = 61
COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
MLA = dict(COMMON, num_key_value_heads=4, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)


def _configs() -> dict:
    t = transformers
    return {
        "olmoe": lambda: t.OlmoeConfig(num_experts=8, num_experts_per_tok=2, **COMMON),
        "mixtral": lambda: t.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **COMMON),
        "qwen2_moe": lambda: t.Qwen2MoeConfig(num_experts=8, num_experts_per_tok=3, moe_intermediate_size=16,
                                              shared_expert_intermediate_size=32, mlp_only_layers=[1],
                                              norm_topk_prob=False, **COMMON),
        "qwen3_moe": lambda: t.Qwen3MoeConfig(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
                                              head_dim=8, norm_topk_prob=True, **COMMON),
        "deepseek_v2": lambda: t.DeepseekV2Config(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
                                                  n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=None,
                                                  topk_method="group_limited_greedy", n_group=4, topk_group=2,
                                                  routed_scaling_factor=1.5, **MLA),
        "deepseek_v3": lambda: t.DeepseekV3Config(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
                                                  n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=24,
                                                  n_group=4, topk_group=2, norm_topk_prob=True,
                                                  routed_scaling_factor=2.5, **MLA),
        "gpt_oss": lambda: t.GptOssConfig(num_local_experts=4, num_experts_per_tok=2, head_dim=8,
                                          **dict(COMMON, intermediate_size=32)),
    }


ARCHS = sorted(_configs())
PROMPTS = [[5, 9, 17, 33, 4, 12], [40, 7, 21], [11, 3, 58, 26, 30]]


def _build_model(model_type: str, directory: Path) -> Path:
    """A seeded tiny model whose routers have well-separated logits (no near-ties), saved to disk."""
    torch.manual_seed(1234)
    config = _configs()[model_type]()
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "mlp.router.weight")):
                # DeepSeek-V3's sigmoid saturates: keep its logits small so scores stay distinct
                std = 0.3 if model_type == "deepseek_v3" else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith("mlp.router.bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
    path = directory / model_type
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("models")

    def get(model_type: str) -> Path:
        if model_type not in cache:
            cache[model_type] = _build_model(model_type, root)
        return cache[model_type]

    return get


# ---- the reference: each architecture's routing rule, from its logits -------------------------
def reference_routing(model_type: str, model, logits: "torch.Tensor", layer_module) -> tuple[np.ndarray, np.ndarray]:
    """Experts in rank order and the weights the model applies, per token ([T, k] each)."""
    cfg = model.config
    k = cfg.num_experts_per_tok
    logits = logits.float()
    if model_type in ("olmoe", "qwen2_moe", "qwen3_moe", "mixtral"):
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, k, dim=-1)
        w = top.values
        if model_type == "mixtral" or cfg.norm_topk_prob:
            w = w / w.sum(dim=-1, keepdim=True)
        return top.indices.numpy(), w.numpy()
    if model_type == "gpt_oss":  # top-k on the logits, softmax over the k chosen
        top = torch.topk(logits, k, dim=-1)
        return top.indices.numpy(), torch.softmax(top.values, dim=-1).numpy()
    if model_type == "deepseek_v2":
        probs = torch.softmax(logits, dim=-1)
        masked = _keep_groups(probs, cfg, probs.view(probs.shape[0], cfg.n_group, -1).max(dim=-1).values, 0.0)
        top = torch.topk(masked, k, dim=-1)
        return top.indices.numpy(), (top.values * cfg.routed_scaling_factor).numpy()
    if model_type == "deepseek_v3":
        s = torch.sigmoid(logits)
        choice = s + layer_module.mlp.gate.e_score_correction_bias.float()
        gscore = choice.view(choice.shape[0], cfg.n_group, -1).topk(2, dim=-1).values.sum(dim=-1)
        top = torch.topk(_keep_groups(choice, cfg, gscore, float("-inf")), k, dim=-1)
        w = s.gather(1, top.indices)
        w = w / w.sum(dim=-1, keepdim=True) * cfg.routed_scaling_factor
        return top.indices.numpy(), w.numpy()
    raise AssertionError(model_type)


def reference_probabilities(model_type: str, model, logits: "torch.Tensor", layer_module) -> "torch.Tensor":
    """Per-token distribution over experts used for lookahead: the router's selection scores, normalised."""
    cfg = model.config
    logits = logits.float()
    if model_type in ("olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "gpt_oss"):
        return torch.softmax(logits, dim=-1)
    if model_type == "deepseek_v2":
        probs = torch.softmax(logits, dim=-1)
        s = _keep_groups(probs, cfg, probs.view(probs.shape[0], cfg.n_group, -1).max(dim=-1).values, 0.0)
    else:
        choice = torch.sigmoid(logits) + layer_module.mlp.gate.e_score_correction_bias.float()
        gscore = choice.view(choice.shape[0], cfg.n_group, -1).topk(2, dim=-1).values.sum(dim=-1)
        s = _keep_groups(choice, cfg, gscore, 0.0).clamp(min=0)
    return s / s.sum(dim=-1, keepdim=True)


def _keep_groups(scores, cfg, group_scores, fill):
    keep = torch.topk(group_scores, cfg.topk_group, dim=-1).indices
    mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
    return scores.masked_fill(~mask.repeat_interleave(scores.shape[1] // cfg.n_group, dim=1), fill)


def _rms_norm(norm_module, x):
    """RMSNorm written out: weight * x / sqrt(mean(x^2) + eps)."""
    eps = getattr(norm_module, "variance_epsilon", getattr(norm_module, "eps", 1e-6))
    return norm_module.weight.float() * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _router(layer_module):
    mlp = layer_module.mlp
    return mlp.router if hasattr(mlp, "router") else mlp.gate


def reference_sequence(model, model_type: str, tokens: list[int], lookahead: int):
    """Routing of every fed position (all but the last token), and lookahead probabilities, from one forward.

    The residual stream entering each MoE block is rebuilt as (the decoder layer's input, from
    `output_hidden_states`) + (its attention output, from a hook); the router logits are then
    computed here by hand: RMSNorm with the layer's weights, times the router matrix (+ bias).
    """
    layers = model.model.layers
    moe = [i for i, ly in enumerate(layers) if hasattr(ly.mlp, "experts")]
    attn_out: dict[int, torch.Tensor] = {}
    handles = [layers[i].self_attn.register_forward_hook(
        lambda mod, args, out, i=i: attn_out.__setitem__(i, out[0].detach())) for i in moe]
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([tokens[:-1]]), output_hidden_states=True)
        for h in handles:
            h.remove()
        residual = {i: (out.hidden_states[i][0] + attn_out[i][0]).float() for i in moe}
        routing = [reference_routing(model_type, model, _logits(layers[i], residual[i]), layers[i]) for i in moe]
        probs = {}
        for layer_index, i in enumerate(moe):
            for d in range(1, lookahead + 1):
                if layer_index + d < len(moe):
                    target = layers[moe[layer_index + d]]
                    logits = _logits(target, residual[i])
                    probs[(layer_index, d)] = reference_probabilities(model_type, model, logits, target)
    return routing, probs, out.logits[0].argmax(dim=-1).tolist()


def _logits(layer_module, residual):
    """Router logits of `layer_module` for a residual stream: its pre-MoE RMSNorm, then its router."""
    router = _router(layer_module)
    logits = _rms_norm(layer_module.post_attention_layernorm, residual) @ router.weight.float().T
    if getattr(router, "bias", None) is not None:
        logits = logits + router.bias.float()
    return logits


def _recorded_cells(trace):
    """(request, position, layer) -> (experts, weights) from the trace."""
    out = {}
    k = trace.meta.top_k
    for p in range(trace.n_passes):
        t0, t1 = trace.pass_token_offsets[p], trace.pass_token_offsets[p + 1]
        reqs, poss = trace.token_request[t0:t1], trace.token_position[t0:t1]
        for c in range(trace.pass_cell_offsets[p], trace.pass_cell_offsets[p + 1]):
            a0, a1 = trace.cell_offsets[c], trace.cell_offsets[c + 1]
            e = trace.expert[a0:a1].reshape(-1, k)
            w = trace.weight[a0:a1].astype(np.float32).reshape(-1, k)
            for j, (r, pos) in enumerate(zip(reqs, poss)):
                out[(int(r), int(pos), int(trace.cell_layer[c]))] = (e[j], w[j])
    return out


def _check_against_reference(model_type: str, model, recording, lookahead: int) -> None:
    trace = recording.trace
    cells = _recorded_cells(trace)
    refs = {}
    for r, seq in enumerate(recording.sequences):
        routing, probs, greedy = reference_sequence(model, model_type, seq, lookahead)
        refs[r] = probs
        n_prompt = recording.prompt_lengths[r]
        # greedy decoding: every generated token is the argmax after the previous position
        assert seq[n_prompt:] == greedy[n_prompt - 1:], f"request {r} is not the greedy continuation"
        for pos in range(len(seq) - 1):
            for layer_index, (ids, w) in enumerate(routing):
                got_e, got_w = cells.pop((r, pos, layer_index))
                assert got_e.tolist() == ids[pos].tolist(), (r, pos, layer_index)
                np.testing.assert_allclose(got_w, w[pos], rtol=2e-3, atol=1e-4)
    assert not cells, f"recorded tokens with no reference: {sorted(cells)[:3]}"
    if not lookahead:
        return
    # lookahead: per cell, top-n of the mean probability over the cell's tokens
    n_layers = trace.meta.n_layers
    for d in range(1, lookahead + 1):
        pred, score = trace.predictions[f"lookahead_{d}"], trace.predictions[f"lookahead_{d}_score"]
        n = pred.shape[1]
        for p in range(trace.n_passes):
            t0, t1 = trace.pass_token_offsets[p], trace.pass_token_offsets[p + 1]
            toks = list(zip(trace.token_request[t0:t1].tolist(), trace.token_position[t0:t1].tolist()))
            for c in range(trace.pass_cell_offsets[p], trace.pass_cell_offsets[p + 1]):
                layer_index = int(trace.cell_layer[c])
                if layer_index + d >= n_layers:
                    assert (pred[c] == -1).all() and (score[c] == 0).all()
                    continue
                mean = torch.stack([refs[r][(layer_index, d)][pos] for r, pos in toks]).mean(dim=0)
                top = torch.topk(mean, n)
                assert pred[c].tolist() == top.indices.tolist(), (p, layer_index, d)
                np.testing.assert_allclose(score[c], top.values.numpy(), rtol=1e-4, atol=1e-6)


# ---- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ARCHS)
def test_batched_recording_matches_routing_from_router_logits(model_type, model_dirs):
    path = model_dirs(model_type)
    model, arch = load_model(path, device="cpu")
    cfg = RecordConfig(max_new_tokens=4, batch_size=2, lookahead=2, stop_at_eos=False, device="cpu")
    rec = record_model(model, arch, PROMPTS, cfg)
    trace = rec.trace
    # shape of the passes: groups {0,1} and {2}; each 1 prefill + 3 decode passes
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE, DECODE] * 2
    assert np.diff(trace.pass_token_offsets).tolist() == [9, 2, 2, 2, 5, 1, 1, 1]
    assert trace.meta.model == model.config.architectures[0]
    _check_against_reference(model_type, model, rec, lookahead=2)


@pytest.mark.parametrize("model_type", ["olmoe", "deepseek_v3"])
def test_batching_changes_passes_but_not_any_token_routing(model_type, model_dirs):
    model, arch = load_model(model_dirs(model_type), device="cpu")
    one = record_model(model, arch, PROMPTS, RecordConfig(max_new_tokens=5, batch_size=1, stop_at_eos=False))
    three = record_model(model, arch, PROMPTS, RecordConfig(max_new_tokens=5, batch_size=3, stop_at_eos=False))
    assert one.sequences == three.sequences
    assert one.trace.n_passes == 3 * 5 and three.trace.n_passes == 5
    a, b = _recorded_cells(one.trace), _recorded_cells(three.trace)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0].tolist() == b[key][0].tolist(), key
        np.testing.assert_allclose(a[key][1], b[key][1], rtol=2e-3, atol=1e-4)


def test_object_and_dense_bytes_come_from_the_parameter_shapes(model_dirs):
    model, arch = load_model(model_dirs("qwen2_moe"), device="cpu")
    trace = record_model(model, arch, PROMPTS[:1], RecordConfig(max_new_tokens=2)).trace
    h, i = 32, 16
    assert trace.meta.object_bytes == [3 * h * i * 4] * 2  # gate, up, down in float32
    assert trace.meta.layer_ids == [0, 2]  # layer 1 is a dense MLP (mlp_only_layers)
    assert trace.meta.shared_experts == 1
    layer = model.model.layers[0]
    dense = sum(p.numel() * 4 for n, p in layer.named_parameters() if not n.startswith("mlp.experts."))
    assert trace.meta.dense_bytes == [dense, dense]
    gpt, arch = load_model(model_dirs("gpt_oss"), device="cpu")
    per_expert = (32 * 64 + 64 + 32 * 32 + 32) * 4  # gate_up (+bias) and down (+bias)
    trace = record_model(gpt, arch, PROMPTS[:1], RecordConfig(max_new_tokens=1)).trace
    assert trace.meta.object_bytes == [per_expert] * 3


def test_a_sequence_leaves_the_batch_at_its_end_of_sequence_token(model_dirs):
    model, arch = load_model(model_dirs("mixtral"), device="cpu")
    n = 6
    free = record_model(model, arch, PROMPTS, RecordConfig(max_new_tokens=n, batch_size=3, stop_at_eos=False))
    eos = free.sequences[0][len(PROMPTS[0]) + 1]  # request 0's second generated token
    stopped = record_model(model, arch, PROMPTS, RecordConfig(max_new_tokens=n, batch_size=3, eos_token_ids=(eos,)))
    for r, seq in enumerate(free.sequences):
        generated = seq[len(PROMPTS[r]):]
        j = generated.index(eos) + 1 if eos in generated else n  # tokens it generates before stopping
        assert stopped.sequences[r] == seq[: len(PROMPTS[r]) + j]
        decode_tokens = np.count_nonzero(
            (stopped.trace.token_request == r) & (stopped.trace.token_position >= len(PROMPTS[r])))
        assert decode_tokens == j - 1, r


def test_text_prompts_go_through_the_model_directory_tokenizer(model_dirs, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = model_dirs("olmoe")
    words = ["<pad>", "<s>", "</s>", "<unk>"] + "the cache holds hot experts and cold ones wait on the link".split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    tok_dir = tmp_path / "tok"
    fast.save_pretrained(tok_dir)
    text_file = tmp_path / "prompts.txt"
    text_file.write_text("the cache holds hot experts\n\ncold ones wait on the link\n")
    ids_file = tmp_path / "prompts.jsonl"
    expected = [fast(line)["input_ids"] for line in ("the cache holds hot experts", "cold ones wait on the link")]
    ids_file.write_text("\n".join(json.dumps(x) for x in expected) + "\n")
    cfg = RecordConfig(max_new_tokens=3, batch_size=2, stop_at_eos=False, device="cpu")
    from_text = record(path, text_file, cfg, tokenizer_path=tok_dir)
    from_ids = record(path, ids_file, cfg)
    assert [s[:n] for s, n in zip(from_text.sequences, from_text.prompt_lengths)] == expected
    assert np.array_equal(from_text.trace.expert, from_ids.trace.expert)
    assert np.array_equal(from_text.trace.weight, from_ids.trace.weight)
    assert from_text.trace.meta.provenance["prompts_sha256"] != from_ids.trace.meta.provenance["prompts_sha256"]
    with pytest.raises(UserError, match=r"prompts.txt:1: a text prompt needs a tokenizer"):
        record(path, text_file, cfg)


def test_recording_is_deterministic_and_names_its_sources(model_dirs, tmp_path):
    path = model_dirs("qwen3_moe")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS))
    cfg = RecordConfig(max_new_tokens=3, batch_size=2, lookahead=1, stop_at_eos=False, device="cpu")
    a, b = record(path, prompts, cfg), record(path, prompts, cfg)
    assert a.trace.content_hash() == b.trace.content_hash()
    prov = a.trace.meta.provenance
    assert prov["transformers"] == transformers.__version__
    assert prov["model_path"] == str(path) and prov["source_file"] == "p.jsonl"
    assert len(prov["prompts_sha256"]) == 64
    assert prov["lookahead"] == 1 and prov["top_n"] == 2


def test_unsupported_or_missing_models_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a model directory"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="model type 'bert' is not supported; supported: .*olmoe"):
        load_model(tmp_path / "bert")
    assert set(supported_architectures()) >= {"olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss"}


def test_bad_options_and_token_ids_are_user_errors(model_dirs, tmp_path):
    path = model_dirs("olmoe")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("[3, 4]\n[5, 999]\n")
    with pytest.raises(UserError, match=r"p.jsonl:2: token id 999 is outside the model's vocabulary"):
        record(path, prompts, RecordConfig(device="cpu"))
    prompts.write_text("[3, 4]\n")
    with pytest.raises(UserError, match="--top-n: 9 is more than the model's 8 experts"):
        record(path, prompts, RecordConfig(top_n=9, lookahead=1, device="cpu"))
    with pytest.raises(UserError, match="--batch: must be at least 1"):
        RecordConfig(batch_size=0).check()


def test_cli_errors_exit_1_with_one_line(tmp_path, capsys):
    code = main(["record", "--model", str(tmp_path / "none"), "--prompts", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "t.parquet")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.parquet").exists()


def test_cli_writes_a_trace_that_loads_back_with_its_predictions(model_dirs, tmp_path, capsys):
    from moesim.traces.format import io
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS))
    out = tmp_path / "t.parquet"
    code = main(["record", "--model", str(model_dirs("olmoe")), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "3", "--batch", "2", "--lookahead", "2", "--top-n", "3", "--ignore-eos",
                 "--device", "cpu", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    trace = io.load_trace(out)
    assert summary["content_hash"] == trace.content_hash()
    assert trace.predictions["lookahead_2"].shape == (trace.n_cells, 3)
    assert summary["passes"] == 6 and summary["generated_tokens"] == 9
