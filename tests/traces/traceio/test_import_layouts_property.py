"""Property: a batched schedule written in any supported layout imports back to the same passes.

Hypothesis draws a serving schedule (requests join with a prompt, then decode one token per pass
until they finish; a pass batches whoever is running), routes every token at every layer to
distinct experts, and writes it three ways: one JSONL file in layer-major order with a pass
column, the same rows shuffled, and one file per layer whose slot index restarts every pass and
that names no position. Each import must give the schedule's passes, tokens, requests, positions
and experts; the phases follow the rule "a request's first pass is prefill when it holds more
than one of its tokens".
"""

from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL

LAYERS = (2, 5)  # model layer numbers of the logged layers
N_EXPERTS, TOP_K = 6, 2


@st.composite
def schedules(draw):
    """Passes as lists of (request, position) tokens, in slot order."""
    n_req = draw(st.integers(1, 4))
    prompts = [draw(st.integers(1, 4)) for _ in range(n_req)]
    lengths = [draw(st.integers(0, 3)) for _ in range(n_req)]  # decode tokens after the prompt
    joins = sorted(draw(st.integers(0, 3)) for _ in range(n_req))
    passes, pos = [], [0] * n_req
    step = 0
    while any(pos[r] < prompts[r] + lengths[r] for r in range(n_req)):
        tokens = []
        for r in range(n_req):
            if joins[r] > step or pos[r] >= prompts[r] + lengths[r]:
                continue
            count = prompts[r] if pos[r] == 0 else 1
            tokens += [(r, pos[r] + i) for i in range(count)]
            pos[r] += count
        step += 1
        if tokens:
            passes.append(tokens)
    return passes


def routes(seed: int, passes):
    rng = np.random.default_rng(seed)
    return {(p, layer, slot): rng.choice(N_EXPERTS, TOP_K, replace=False).tolist()
            for p, tokens in enumerate(passes) for layer in LAYERS for slot in range(len(tokens))}


def expected_phases(passes):
    seen, out = set(), []
    for tokens in passes:
        firsts = {r for r, _ in tokens if r not in seen}
        many = any(sum(1 for q, _ in tokens if q == r) > 1 for r in firsts)
        out.append(PREFILL if many else DECODE)
        seen |= {r for r, _ in tokens}
    return out


def check(trace, passes, experts):
    assert np.diff(trace.pass_token_offsets).tolist() == [len(t) for t in passes]
    assert trace.pass_phase.tolist() == expected_phases(passes)
    assert trace.meta.layer_ids == list(LAYERS)
    names = {int(v): k for k, v in trace.meta.provenance["request_ids"].items()}
    got = [(names[int(r)], int(p)) for r, p in zip(trace.token_request, trace.token_position)]
    assert got == [(f"req-{r}", p) for tokens in passes for r, p in tokens]
    for p, tokens in enumerate(passes):
        for i, layer in enumerate(LAYERS):
            c = trace.pass_cell_offsets[p] + i
            cell = trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]].tolist()
            assert cell == [e for slot in range(len(tokens)) for e in experts[(p, layer, slot)]]


@settings(max_examples=int(os.environ.get("MOESIM_FUZZ_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(passes=schedules(), seed=st.integers(0, 2**16))
def test_every_layout_imports_the_schedule(tmp_path_factory, passes, seed):
    folder = tmp_path_factory.mktemp("layouts")
    experts = routes(seed, passes)
    rows = [{"pass": p, "request": f"req-{r}", "position": pos, "layer": layer, "experts": experts[(p, layer, s)]}
            for layer in LAYERS for p, tokens in enumerate(passes) for s, (r, pos) in enumerate(tokens)]
    (folder / "layer_major.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    check(load_trace(folder / "layer_major.jsonl"), passes, experts)

    order = np.random.default_rng(seed).permutation(len(rows))
    (folder / "shuffled.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in order))
    shuffled = load_trace(folder / "shuffled.jsonl")
    assert np.diff(shuffled.pass_token_offsets).tolist() == [len(t) for t in passes]
    assert shuffled.pass_phase.tolist() == expected_phases(passes)

    logs = folder / "per_layer"
    logs.mkdir()
    for layer in LAYERS:
        lines = [json.dumps({"num_experts": N_EXPERTS, "layers_logged": list(LAYERS)})]
        lines += [json.dumps({"req_id": f"req-{r}", "slot": s, "experts": experts[(p, layer, s)]})
                  for p, tokens in enumerate(passes) for s, (r, _) in enumerate(tokens)]
        (logs / f"moe_layer{layer}.jsonl").write_text("\n".join(lines) + "\n")
    check(load_trace(logs / "moe_layer*.jsonl", format="generic", pass_by="reset:slot",
                     layer_from_filename="moe_layer{layer}"), passes, experts)
