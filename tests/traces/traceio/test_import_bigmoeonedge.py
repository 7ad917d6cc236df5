"""BigMoeOnEdge route_trace v1 on the real qwen and gemma recordings.

References are independent of the importer: the CSV re-read with the stdlib csv module, the
SOURCE.txt facts (token counts, cache size), the numbers the upstream findings.md reports, and the
engine's own residency column, which a plain LRU at the run's cache size must reproduce on decode
rows (SOURCE.txt: >= 99.9 %).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.sim.cache_core import HIT
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL


def csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as f:
        lines = f.read().splitlines()
    preamble = [line for line in lines if line.startswith("#")]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return preamble, rows


def access_phase(trace) -> np.ndarray:
    return trace.pass_phase[trace.cell_pass()][trace.access_cell()]


def test_qwen_shape_matches_source_txt(qwen_csv):
    trace = load_trace(qwen_csv)
    m = trace.meta
    assert (m.n_layers, m.n_experts, m.top_k) == (48, 128, 6)
    tokens = np.diff(trace.pass_token_offsets)
    assert int(tokens[trace.pass_phase == PREFILL].sum()) == 28
    assert int(tokens[trace.pass_phase == DECODE].sum()) == 128
    assert trace.n_passes == 1 + 128  # one prefill pass, one pass per decode step
    assert trace.n_accesses == 44_766
    assert m.extra["engine_cache_bytes"] == 4000 * 2**20


def test_rows_are_kept_in_file_order_with_their_weights_and_residency(qwen_csv):
    trace = load_trace(qwen_csv)
    preamble, rows = csv_rows(qwen_csv)
    layer = np.repeat(trace.cell_layer, np.diff(trace.cell_offsets))
    assert layer.tolist() == [int(r["layer"]) for r in rows]
    assert trace.expert.tolist() == [int(r["expert"]) for r in rows]
    assert np.allclose(trace.weight.astype(np.float64), [float(r["weight"]) for r in rows], rtol=1e-3, atol=1e-4)
    assert trace.annotations["engine_residency"].tolist() == [int(r["residency"]) for r in rows]
    positions = trace.token_position[trace.pass_token_offsets[:-1][trace.cell_pass()[trace.access_cell()]]
                                     + trace.access_tokens()]
    assert positions.tolist() == [int(r["step"]) for r in rows]
    sizes = {int(line.split()[1].split("=")[1]): int(line.split()[2].split("=")[1])
             for line in preamble if line.startswith("# layer=")}
    assert trace.meta.object_bytes == [sizes[i] for i in range(48)]


def test_qwen_prefill_last_layer_routes_only_the_final_prompt_token(qwen_csv):
    trace = load_trace(qwen_csv)
    prefill_cells = range(trace.pass_cell_offsets[0], trace.pass_cell_offsets[1])
    assert [int(trace.cell_tokens[c]) for c in prefill_cells] == [28] * 47 + [1]
    last = prefill_cells[-1]
    tokens = trace.access_tokens()[trace.cell_offsets[last]:trace.cell_offsets[last + 1]]
    assert set(tokens.tolist()) == {27} and int(trace.token_position[27]) == 27


@pytest.mark.parametrize("name", ["qwen", "gemma"])
def test_lru_at_the_engine_cache_size_reproduces_the_engine_residency(name, qwen_csv, gemma_csv):
    trace = load_trace(qwen_csv if name == "qwen" else gemma_csv)
    result = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=trace.meta.extra["engine_cache_bytes"],
                                              mode="sequential"))
    decode = access_phase(trace) == DECODE
    agree = (result.outcomes == HIT) == (trace.annotations["engine_residency"] == 1)
    assert agree[decode].mean() >= 0.999


@pytest.mark.parametrize("name,bank_mib,decode_touched_mib,mean_distinct,lo,hi", [
    ("qwen", 16_740, 8_386, 64, 33, 107),
    ("gemma", 14_429, 7_576, 67, 52, 97),
])
def test_numbers_reported_by_upstream_findings(name, bank_mib, decode_touched_mib, mean_distinct, lo, hi,
                                               qwen_csv, gemma_csv):
    trace = load_trace(qwen_csv if name == "qwen" else gemma_csv)
    assert round(trace.total_object_bytes() / 2**20) == pytest.approx(bank_mib, abs=2)
    decode = access_phase(trace) == DECODE
    objects = np.unique(trace.object_ids()[decode])
    assert round(trace.object_bytes_array()[objects].sum() / 2**20) == decode_touched_mib
    layer = np.repeat(trace.cell_layer, np.diff(trace.cell_offsets))
    distinct = [np.unique(trace.expert[decode & (layer == lay)]).size for lay in range(trace.meta.n_layers)]
    assert round(np.mean(distinct)) == mean_distinct and (min(distinct), max(distinct)) == (lo, hi)


def test_columns_are_read_by_name_and_extra_columns_ignored(qwen_csv, tmp_path):
    preamble, rows = csv_rows(qwen_csv)
    order = ["dropped", "expert", "weight", "layer", "step", "phase", "turn", "residency", "slot"]
    out = tmp_path / "shuffled.route.csv"
    with out.open("w", newline="") as f:
        f.write("\n".join(preamble) + "\n")
        writer = csv.DictWriter(f, fieldnames=order, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(r, dropped="0"))
    a, b = load_trace(qwen_csv), load_trace(out)
    for name in ("cell_layer", "cell_offsets", "cell_tokens", "expert", "weight", "token_position"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert "engine_cache_bytes" not in b.meta.extra  # no SOURCE.txt / log beside the copy


def test_cache_size_option_and_log(qwen_csv, tmp_path):
    preamble, rows = csv_rows(qwen_csv)
    body = "\n".join(preamble) + "\nphase,step,layer,expert\n" + "".join(
        f"{r['phase']},{r['step']},{r['layer']},{r['expert']}\n" for r in rows)
    (tmp_path / "run.route.csv").write_text(body)
    (tmp_path / "run.log").write_text("main: args --cache-mb 1234 --overlap\n")
    trace = load_trace(tmp_path / "run.route.csv")
    assert trace.meta.extra["engine_cache_mib"] == 1234 and trace.meta.extra["engine_cache_from"] == "run.log"
    assert trace.weight is None and trace.annotations == {}
    trace = load_trace(tmp_path / "run.route.csv", format="bigmoeonedge", cache_mb="2000")
    assert trace.meta.extra["engine_cache_bytes"] == 2000 * 2**20


def write_small(tmp_path: Path, rows: list[str], preamble_extra: str = "") -> Path:
    text = ("# route_trace v1\n# model=/x/toy.gguf arch=toy n_layer=2 n_expert=4 n_expert_used=2\n"
            "# layer=0 expert_bytes=100 dense_bytes=10\n# layer=1 expert_bytes=200 dense_bytes=10\n"
            + preamble_extra + "turn,phase,step,layer,slot,expert,weight,residency,expert_bytes\n"
            + "\n".join(rows) + "\n")
    path = tmp_path / "toy.route.csv"
    path.write_text(text)
    return path


GOOD = ["0,0,0,0,0,1,0.6,0,100", "0,0,0,0,1,2,0.4,0,100", "0,0,0,1,0,3,0.7,0,200", "0,0,0,1,1,0,0.3,0,200",
        "0,1,1,0,0,1,0.5,1,0", "0,1,1,0,1,3,0.5,0,100", "0,1,1,1,0,3,0.9,1,0", "0,1,1,1,1,2,0.1,0,200"]


def test_small_hand_built_file(tmp_path):
    trace = load_trace(write_small(tmp_path, GOOD))
    assert trace.pass_phase.tolist() == [PREFILL, DECODE]
    assert trace.expert.tolist() == [1, 2, 3, 0, 1, 3, 3, 2]
    assert trace.meta.object_bytes == [100, 200] and trace.meta.dense_bytes == [10, 10]
    assert trace.meta.model == "toy"


@pytest.mark.parametrize("row,message", [
    ("0,1,1,1,1,7,0.1,0,200", r"line 13: field 'expert': 7 outside 0..3"),
    ("0,1,1,-1,1,2,0.1,0,200", r"line 13: field 'layer': -1 outside 0..1"),
    ("0,1,1,1,1,3,0.1,0,200", r"line 13: field 'expert': 3 appears twice"),
    ("0,1,1,1,1,x,0.1,0,200", r"line 13: field 'expert': 'x' is not an integer"),
    ("0,1,1,1,1,2,nan,0,200", r"line 13: field 'weight'"),
])
def test_bad_rows_name_their_line(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        load_trace(write_small(tmp_path, GOOD[:-1] + [row]))


def test_missing_expert_and_bad_preamble(tmp_path):
    with pytest.raises(UserError, match=r"line 12: .* routes to 1 experts; top-k is 2"):
        load_trace(write_small(tmp_path, GOOD[:-1]))
    path = write_small(tmp_path, GOOD)
    path.write_text(path.read_text().replace("# layer=1 expert_bytes=200 dense_bytes=10\n", ""))
    with pytest.raises(UserError, match=r"no '# layer=1 expert_bytes=...' line"):
        load_trace(path)
    path.write_text(path.read_text().replace("# route_trace v1", "# route_trace v2"))
    with pytest.raises(UserError, match=r"must be '# route_trace v1'"):
        load_trace(path, format="bigmoeonedge")
