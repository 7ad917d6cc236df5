"""stratamoe RouterTrace v2 and FLAME router scores on the real recordings.

References: the JSON re-read with json, capture-metadata.json's prompt spans, the FLAME dataset
card's check value (SOURCE.txt) and the per-layer token counts in FLAME's own *_stats.csv files.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import PREFILL

# ---- stratamoe ----------------------------------------------------------------------------------


def test_switch_base_8_prompts_become_requests(strata_dir):
    trace = load_trace(strata_dir / "router-trace.v2.json")
    doc = json.loads((strata_dir / "router-trace.v2.json").read_text())
    spans = json.loads((strata_dir / "capture-metadata.json").read_text())["prompt_spans"]
    m = trace.meta
    assert (m.n_layers, m.n_experts, m.top_k, trace.n_tokens) == (6, 8, 1, 215)
    assert m.layer_ids == [1, 3, 5, 7, 9, 11] and m.model == "google/switch-base-8"
    assert trace.n_passes == 10 and (trace.pass_phase == PREFILL).all()
    assert np.diff(trace.pass_token_offsets).tolist() == [s["non_padding_tokens"] for s in spans]
    assert trace.token_request.tolist() == [i for i, s in enumerate(spans) for _ in range(s["non_padding_tokens"])]
    # cell (prompt p, layer l) holds selections[t][l] for the prompt's tokens t, in order
    expected = [doc["selections"][t][layer][0]
                for s in spans for layer in range(6) for t in range(s["token_start"], s["token_end_exclusive"])]
    assert trace.expert.tolist() == expected
    assert m.object_bytes == [2 * 768 * 3072 * 4] * 6  # wi + wo, d_model 768, d_ff 3072, fp32 as captured
    assert m.provenance["object_bytes_from"] == "model catalog entry switch-base-8 (fp32 experts)"


def test_a_folder_loads_like_its_trace_file(strata_dir):
    assert load_trace(strata_dir).content_hash() == load_trace(strata_dir / "router-trace.v2.json").content_hash()


def test_metadata_for_another_trace_is_refused(strata_dir, tmp_path):
    shutil.copy(strata_dir / "router-trace.v2.json", tmp_path)
    meta = json.loads((strata_dir / "capture-metadata.json").read_text())
    meta["trace_sha256"] = "0" * 64
    (tmp_path / "capture-metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"capture-metadata.json: field 'trace_sha256' names another file"):
        load_trace(tmp_path / "router-trace.v2.json")
    trace = load_trace(tmp_path / "router-trace.v2.json", format="stratamoe", metadata="none")
    assert trace.n_passes == 1 and trace.n_tokens == 215  # without spans: one request


def test_stratamoe_bad_selection_is_named(tmp_path):
    doc = {"version": 2, "tokens": 2, "layers": 1, "expertsPerLayer": 4, "topK": 1, "selections": [[[1]], [[4]]]}
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"selections\[1\]\[0\]'?: expert 4 outside 0..3"):
        load_trace(tmp_path / "t.json")
    doc["selections"] = [[[1]], [[1, 2]]]
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"selections\[1\]\[0\]' must list 1 integer"):
        load_trace(tmp_path / "t.json")
    doc["selections"] = [[[1]], [[2]]]
    (tmp_path / "t.json").write_text(json.dumps(doc))
    trace = load_trace(tmp_path / "t.json", format="stratamoe", expert_bytes="1 KiB")
    assert trace.expert.tolist() == [1, 2] and trace.meta.object_bytes == [1024]


# ---- FLAME --------------------------------------------------------------------------------------


def test_flame_check_value_from_the_dataset_card(flame_dir):
    trace = load_trace(flame_dir)
    assert trace.meta.layer_ids == [2, 3, 4, 5, 6, 7, 8, 9]
    assert trace.expert[:6].tolist() == [34, 28, 21, 47, 3, 12]  # layer 2, token 0
    assert (trace.meta.n_experts, trace.meta.top_k) == (64, 6)
    assert trace.n_passes == 4 and np.diff(trace.pass_token_offsets).tolist() == [512] * 4
    assert trace.token_request.tolist() == list(np.repeat(np.arange(4), 512))
    # SwiGLU experts of FLAME-MoE-290M: 3 matrices of hidden 1024 x expert ffn 704, bf16
    assert trace.meta.object_bytes == [3 * 1024 * 704 * 2] * 8
    assert "object_bytes_unknown" not in trace.meta.extra


def stats_counts(path: Path) -> dict[int, int]:
    with path.open() as f:
        return {int(r["Expert_ID"]): int(r["Token_Count"]) for r in csv.DictReader(f)}


@pytest.mark.parametrize("k", [1, 6])
def test_flame_per_layer_counts_match_the_datasets_own_stats(flame_dir, k):
    """*_top6_stats.csv counts every routed (token, expert); *_top1_stats.csv the first choice.

    The stats come from full-precision scores, the CSV prints 6 decimals: where a token's k-th and
    (k+1)-th printed scores tie, the first choice can differ (layer 2 has one such token for top-1),
    moving one count between two experts. Everywhere else the counts must agree exactly.
    """
    import pandas as pd

    trace = load_trace(flame_dir)
    layer = np.repeat(trace.cell_layer, np.diff(trace.cell_offsets))
    rank = np.arange(trace.n_accesses) % 6
    for i, real_layer in enumerate(trace.meta.layer_ids):
        folder = flame_dir / f"Layer_{real_layer}"
        stats = next(folder.glob(f"*_top{k}_stats.csv"))
        mine = np.bincount(trace.expert[(layer == i) & (rank < k)], minlength=64)
        expected = stats_counts(stats)
        theirs = np.array([expected.get(e, 0) for e in range(64)])
        printed = pd.read_csv(next(p for p in folder.glob("*.csv") if not p.name.endswith("_stats.csv")))
        ordered = -np.sort(-printed.filter(like="expert_").to_numpy(), axis=1)
        ties = int(np.count_nonzero(ordered[:, k - 1] == ordered[:, k]))
        assert np.abs(mine - theirs).sum() <= 2 * ties, (real_layer, ties)
        assert mine.sum() == theirs.sum() == 2048 * k


def test_flame_weights_are_the_scores_in_descending_order(flame_dir):
    trace = load_trace(flame_dir)
    w = trace.weight.astype(np.float32).reshape(-1, 6)
    assert (np.diff(w, axis=1) <= 0).all() and (w > 0).all()


def write_flame(folder: Path, rows: list[list[float]], layers=(2, 3)) -> Path:
    for layer in layers:
        d = folder / f"Layer_{layer}"
        d.mkdir(parents=True)
        n_e = len(rows[0])
        lines = ["layer_id,token_id," + ",".join(f"expert_{e}" for e in range(n_e))]
        lines += [f"0,{t}," + ",".join(str(v) for v in row) for t, row in enumerate(rows)]
        (d / f"toy_runid1_epoch2_layer{layer}.csv").write_text("\n".join(lines) + "\n")
        (d / f"toy_runid1_epoch2_layer{layer}_top1_stats.csv").write_text("Expert_ID,Token_Count\n")
    return folder


def test_flame_small_folder_and_errors(tmp_path):
    rows = [[0.1, 0.0, 0.5], [0.0, 0.2, 0.3], [0.4, 0.4, 0.0], [0.1, 0.9, 0.0]]
    folder = write_flame(tmp_path / "ok", rows)
    unknown = load_trace(folder, format="flame", seq_len=2)  # "toy" is not in the model catalog
    assert unknown.meta.extra["object_bytes_unknown"] is True
    trace = load_trace(folder, format="flame", seq_len=2, expert_bytes="2 KiB")
    assert trace.meta.model == "toy" and trace.meta.provenance["run_id"] == 1
    assert trace.meta.object_bytes == [2048, 2048]
    assert trace.n_passes == 2
    # pass 0 = tokens 0,1: layer 2 then layer 3, experts by descending score (ties by id)
    assert trace.expert[:8].tolist() == [2, 0, 2, 1, 2, 0, 2, 1]
    assert trace.expert[8:12].tolist() == [0, 1, 1, 0]
    with pytest.raises(UserError, match="do not split into sequences of 3"):
        load_trace(folder, format="flame", seq_len=3)
    bad = write_flame(tmp_path / "bad", [[0.1, 0.0, 0.5], [0.0, 0.0, 0.3]])
    with pytest.raises(UserError, match=r"line 3: 1 non-zero scores; every token needs the same number"):
        load_trace(bad, format="flame", seq_len=1)


def test_flame_is_not_bundled():
    from moesim.traces.format.bundled import bundled_names

    assert "flame" not in " ".join(bundled_names())
