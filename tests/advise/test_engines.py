"""Engine option strings: llama.cpp's -ot regex matches exactly the chosen layers' expert tensors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import machine, workload, zipf_trace  # noqa: E402

from moesim.advise.engines import BIGMOEONEDGE, LLAMA_CPP, engine_options, layer_regex  # noqa: E402
from moesim.advise.space import Candidate, Choice  # noqa: E402


def test_layer_regex_matches_only_the_layers_given():
    pattern = re.compile(layer_regex([0, 1, 2, 10]))
    for layer in range(48):
        for tensor in ("ffn_up_exps", "ffn_down_exps", "ffn_gate_exps"):
            assert bool(pattern.fullmatch(f"blk.{layer}.{tensor}.weight")) == (layer in (0, 1, 2, 10))
        assert not pattern.fullmatch(f"blk.{layer}.attn_q.weight")
        assert not pattern.fullmatch(f"blk.{layer}.ffn_gate_inp.weight")  # the router stays on the GPU


def _candidate(**labels):
    choices = []
    for dim, label in labels.items():
        facts = ()
        if dim == "capacity":
            facts = (("capacity_bytes", 4000 * 2**20), ("all_resident", label == "all"))
        if dim == "overlap":  # the engine's own mode (moesim/advise/overlap.py)
            facts = (("engine_mode", "overlap" if label == "expert" else "serial"),)
        choices.append(Choice(dim, label, facts=facts))
    return Candidate(tuple(choices))


def test_all_resident_on_a_gpu_maps_to_ngl_and_phone_cache_to_cache_mb():
    trace = zipf_trace()
    w = workload(trace)
    gpu = engine_options(_candidate(capacity="all", eviction="lru", prefetch="none"), machine("rtx4090", 2, trace), w)
    assert [o.engine for o in gpu][0] == LLAMA_CPP and gpu[0].options == "-ngl 999"
    phone = engine_options(_candidate(capacity="x", eviction="lru", prefetch="none", overlap="expert"),
                           machine("phone-oneplus-15r", 0.5, trace), w)
    assert phone[0].engine == BIGMOEONEDGE and phone[0].options == "--cache-mb 4000 --io-threads 4 --overlap"
    # a policy no engine implements gets no line
    assert engine_options(_candidate(capacity="x", eviction="lfu", prefetch="markov"),
                          machine("phone-oneplus-15r", 0.5, trace), w) == []


def test_cpu_only_maps_to_ngl_0_without_op_offload():
    trace = zipf_trace()
    cand = Candidate((Choice("placement", "cpu-only", facts=(("placed_bytes", 1), ("cpu_only", True))),
                      Choice("capacity", "none", facts=(("capacity_bytes", 0), ("all_resident", True)))))
    opts = engine_options(cand, machine("rtx4090", 0.5, trace), workload(trace))
    assert [(o.engine, o.options) for o in opts] == [(LLAMA_CPP, "-ngl 0 --no-op-offload")]
