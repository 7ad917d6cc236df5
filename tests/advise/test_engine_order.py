"""advise's BigMoeOnEdge configurations against check-run's: one mapping (moesim/runs/engine_map.py
engine_order), so the engine's own configuration gets the same timed fields, the same TPOT and the options
the engine ran with; the cache bookkeeping is counted once, by both or by neither."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advise_helpers import MiB  # noqa: E402

from moesim.advise.engines import BIGMOEONEDGE, engine_changes, engine_options  # noqa: E402
from moesim.advise.search import evaluate  # noqa: E402
from moesim.advise.space import enumerate_space  # noqa: E402

FITTED = "results/fidelity/phone-oneplus-15r-fitted-qwen.yaml"
ENGINE_FIELDS = ("overlap", "prefill_overlap", "read_slices", "slice_order", "expert_order", "ffn_overlap",
                 "capacity_bytes", "eviction", "prefetch", "miss", "io_lanes")


def _check_run(name: str) -> dict:
    from moesim.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["check-run", f"bundled:{name}", "--trace", f"bundled:{name}", "--profile", FITTED, "--json"]) == 0
    return json.loads(buf.getvalue())


def _engine_candidate(model: str, overlap: str = "expert"):
    from moesim.advise.cli_advise import _machine
    from moesim.advise.workload import resolve_workload
    from moesim.sim.cli_timing import resolve_profile

    w = resolve_workload(model)
    m = _machine(FITTED, resolve_profile(FITTED), None, None, 4000 * MiB)
    found = [c for c in enumerate_space(m, w)
             if c.labels()["overlap"] == overlap and c.labels()["eviction"] == "lru"
             and c.labels()["prefetch"] == "none" and c.config_fields()["capacity_bytes"] == 4000 * MiB]
    assert len(found) == 1
    return m, w, found[0]


@pytest.mark.parametrize("model, run", [("qwen3-30b-a3b", "qwen"), ("gemma-4-26b-a4b", "gemma")])
def test_the_engine_configuration_is_priced_and_printed_as_check_run_replays_it(model, run):
    """The bundled runs' configuration (LRU 4000 MiB, 4 io threads, --overlap): advise's candidate has the
    timed fields engine_setup gives check-run, its TPOT is check-run's predicted mean (bookkeeping included),
    and the options it prints are the ones the engine ran with."""
    from moesim.runs.engine_map import engine_setup
    from moesim.runs.readers import read_run

    m, w, cand = _engine_candidate(model)
    measured = read_run(f"bundled:{run}", None).config
    setup = engine_setup(measured, FITTED, arch=measured.model)
    ev = evaluate(m, w, cand, {})
    for name in ENGINE_FIELDS:
        expected = getattr(setup.timed, name)
        got = getattr(ev.config, name)
        if name == "io_lanes":  # the run's 4 threads are the profile's default lanes (None)
            expected = None if expected == m.profile.tier("ssd").read_lanes else expected
        assert got == expected, name
    assert m.bookkeeping_per_byte > 0
    predicted = _check_run(run)["summary"]["tpot_s"]["predicted"]["mean"]
    assert ev.metrics["tpot"] == pytest.approx(predicted, rel=1e-9)
    options = [o.options for o in engine_options(cand, m, w) if o.engine == BIGMOEONEDGE]
    assert options == [f"--cache-mb {int(measured.cache_mib)} --io-threads {measured.lanes} --overlap"]
    assert engine_changes(cand) == []


@pytest.mark.parametrize("model, mapped", [
    ("gemma-4-26b-a4b", {"expert": "--overlap", "layer": "", "expert+ffn": None, "expert+arrival": None,
                         "expert+ffn+arrival": None}),
    ("qwen3-30b-a3b", {"expert": "--overlap", "layer": "", "expert+arrival": None}),
])
def test_only_the_engines_own_modes_map_onto_its_options(model, mapped):
    """--overlap is the engine's "expert" for every model (it runs no FFN during reads); its serial mode is
    "layer"; a lever is an engine change: no option line, the change named instead."""
    from moesim.advise.cli_advise import _machine
    from moesim.advise.workload import resolve_workload
    from moesim.sim.cli_timing import resolve_profile

    w = resolve_workload(model)
    m = _machine(FITTED, resolve_profile(FITTED), None, None, 4000 * MiB)
    seen = set()
    for cand in enumerate_space(m, w):
        labels = cand.labels()
        if labels["eviction"] != "lru" or cand.config_fields()["capacity_bytes"] != 4000 * MiB:
            continue
        if labels["prefetch"] != "none":  # the engine has no prefetcher: never its options, always a change
            assert [o for o in engine_options(cand, m, w) if o.engine == BIGMOEONEDGE] == [] and engine_changes(cand)
            continue
        seen.add(labels["overlap"])
        lines = [o.options for o in engine_options(cand, m, w) if o.engine == BIGMOEONEDGE]
        flag = mapped[labels["overlap"]]
        if flag is None:
            assert lines == [] and engine_changes(cand)
        else:
            assert lines == [f"--cache-mb 4000 --io-threads 4{' ' + flag if flag else ''}"] and not engine_changes(cand)
    assert seen == set(mapped)


def test_bookkeeping_is_counted_once_when_the_clock_takes_it_over(monkeypatch):
    """With ENGINE_HAS_MGMT_PER_BYTE the clock would add the bookkeeping itself: advise and check-run then add
    none beside it (both ask engine_map.bookkeeping_per_byte); without it both add the fitted figure."""
    from moesim.runs.engine_map import bookkeeping_per_byte
    from moesim.runs import engine_map

    def bookkeeping_ms() -> float:
        return _check_run("qwen")["summary"]["components_s"]["cache bookkeeping"]["predicted"]

    assert bookkeeping_per_byte(FITTED) > 0 and bookkeeping_ms() > 0
    monkeypatch.setattr(engine_map, "ENGINE_HAS_MGMT_PER_BYTE", True)
    assert bookkeeping_per_byte(FITTED) == 0.0
    assert bookkeeping_ms() == 0.0
