"""Hardware profiles: shipped files, figures against their sources, every validation error,
overrides, write-back, the CLI, and fuzzing of the parser."""

from __future__ import annotations

import copy
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.cli import main
from moesim.errors import UserError
from moesim.hw_profiles.loader import (
    PROFILES_DIR,
    apply_overrides,
    list_profiles,
    load_profile,
    profile_from_mapping,
    profile_from_yaml,
    profile_to_document,
    profile_to_yaml,
    profile_values,
    save_profile,
    set_field,
)
from moesim.hw_profiles.schema import COUNT, field_spec, value_paths
from moesim.yaml_io import parse_yaml_mapping

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ["h100-sxm", "h100-pcie", "h200-sxm", "a100-80gb", "gh200", "rtx4090", "rtx3090", "apple-m4-max", "phone-oneplus-15r", "specmd-a100-5gbps"]


def shared_traces() -> Path:
    for root in (os.environ.get("MOESIM_SHARED"), REPO.parent / "shared", "/work/shared"):
        if root and (Path(root) / "traces").is_dir():
            return Path(root) / "traces"
    pytest.skip("shared/traces not found (set MOESIM_SHARED)")


# --- the shipped profiles --------------------------------------------------------------------


def test_all_required_profiles_ship() -> None:
    assert set(REQUIRED) <= set(list_profiles())


@pytest.mark.parametrize("name", REQUIRED)
def test_shipped_profile_is_valid_and_fully_sourced(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    values = profile_values(profile)
    leaves = []

    def walk(node: dict[str, Any]) -> None:
        for value in node.values():
            if isinstance(value, dict) and "unit" in value:
                leaves.append(value)
            elif isinstance(value, dict):
                walk(value)

    walk(values)
    for leaf in leaves:
        if leaf["unit"] != "count":
            assert leaf["provenance"] and leaf["provenance"] != "default"
    assert profile.tiers["vram"].usable > 0
    if name != "phone-oneplus-15r":  # every desktop, server and laptop profile can run experts on its CPU
        cpu = profile.processors["cpu"]
        assert cpu.kind == "cpu" and cpu.memory in profile.tiers and cpu.memory_bandwidth > 0 and cpu.cores
        assert profile.compute.cpu_flops and profile.compute.cpu_memory_bandwidth == cpu.memory_bandwidth
    assert profile.framework and profile.overlap in ("layer", "expert")


def test_h100_sxm_figures_are_hardware_md_seeds() -> None:
    p = load_profile("h100-sxm")
    assert p.links["h2d"].bandwidth == 53e9  # hardware.md §7 seed
    assert p.links["h2d"].latency == 5e-6
    assert p.links["d2h"].bandwidth == 52.8e9
    assert p.compute.memory_bandwidth == 3.0e12
    assert p.tiers["vram"].capacity == 81559 * 2**20
    assert p.power.active_watts == 700.0
    # hardware.md §6: one Qwen3-30B-A3B bf16 expert (9.44 MB) costs 0.185 ms at Gen5 with alpha = 7 us;
    # with this profile's alpha = 5 us it is 2 us less.
    assert p.links["h2d"].copy_time(9_437_184) == pytest.approx(0.185e-3 - 2e-6, abs=1e-6)


def test_platform_shapes() -> None:
    gh200 = load_profile("gh200")
    assert gh200.host_link() is gh200.links["c2c"] and "h2d" not in gh200.links
    assert gh200.links["c2c"].bandwidth == 375e9 and gh200.tiers["dram"].bandwidth == 486e9
    apple = load_profile("apple-m4-max")
    assert set(apple.tiers) == {"vram", "ssd"} and set(apple.links) == {"ssd_d"}
    assert apple.host_link() is None and apple.ssd_link() is apple.links["ssd_d"]
    assert "unified" in apple.description and "ssd_d" in apple.description
    specmd = load_profile("specmd-a100-5gbps")
    assert specmd.links["h2d"].bandwidth == 5e9 and "ssd" not in specmd.tiers
    # hardware.md §6: at SpecMD's 5 GB/s one OLMoE expert (12.58 MB) takes about 2.5 ms.
    assert specmd.links["h2d"].copy_time(12_582_912) == pytest.approx(2.5e-3, rel=0.01)
    assert load_profile("rtx3090").links["h2d"].pageable_bandwidth == 6.7e9


def test_phone_matches_the_bigmoeonedge_run() -> None:
    phone = load_profile("phone-oneplus-15r")
    assert set(phone.tiers) == {"vram", "ssd"} and set(phone.links) == {"ssd_d"}
    assert phone.tiers["ssd"].read_lanes == 4 and phone.links["ssd_d"].copy_engines == 4
    assert phone.expert_processor == "cpu" and phone.overlap == "expert" and phone.framework == "llama.cpp"
    root = shared_traces() / "bigmoeonedge"
    metrics = [line.split(",") for line in (root / "qwen.metrics").read_text().splitlines() if line[:1].isdigit()]
    io_seconds = sum(float(row[3]) for row in metrics) / 1e3
    read_bytes = sum(int(row[5]) for row in metrics)
    # per-thread flash bandwidth = bytes read / io time summed over the 4 io threads; each of the
    # queue_depth reads in flight gets read_bandwidth / queue_depth
    per_thread = read_bytes / io_seconds
    curve = phone.tiers["ssd"].throughput
    assert curve is not None and curve.bandwidth(2.86e6, 1) == pytest.approx(per_thread, rel=0.01)
    assert curve.bandwidth(2.86e6, 4) == pytest.approx(4 * per_thread, rel=0.01)
    assert phone.links["ssd_d"].bandwidth == pytest.approx(4 * per_thread, rel=0.01)
    # effective compute: weight bytes a decode token reads / mean compute time per token
    header = (root / "qwen.route.csv").read_text().splitlines()[:60]
    layers = [tuple(map(int, re.findall(r"expert_bytes=(\d+) dense_bytes=(\d+)", line)[0])) for line in header if line.startswith("# layer=")]
    lm_head_q6k = 151936 * 2048 * 210 // 256  # Q6_K: 210 bytes per 256 weights
    token_bytes = sum(6 * e + d for e, d in layers) + lm_head_q6k
    mean_compute = sum(float(row[4]) for row in metrics) / len(metrics) / 1e3
    assert phone.compute.memory_bandwidth == pytest.approx(token_bytes / mean_compute, rel=0.01)
    # reserved = RAM - MemAvailable before the run
    available_kib = int(re.search(r"MemAvailable:\s+(\d+) kB", (root / "qwen.state").read_text()).group(1))  # type: ignore[union-attr]
    assert phone.tiers["vram"].reserved == pytest.approx(11.1e9 - available_kib * 1024, rel=0.01)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_document_and_yaml_round_trip(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    again = profile_from_mapping(profile_to_document(profile), "doc", source_file=profile.source_file)
    assert again == profile
    from_yaml = profile_from_mapping(yaml.safe_load(profile_to_yaml(profile)), "yaml", source_file=profile.source_file)
    assert from_yaml == profile
    target = tmp_path / "out" / f"{name}.yaml"
    save_profile(profile, target)
    assert profile_from_yaml(target).provenance == profile.provenance
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left


# --- overrides -------------------------------------------------------------------------------


def test_overrides_change_only_their_values() -> None:
    base = load_profile("h100-sxm")
    p = apply_overrides(base, ["links.h2d.bandwidth=32GB/s", "tiers.vram.capacity=24GiB"])
    assert p.links["h2d"].bandwidth == 32e9 and p.tiers["vram"].capacity == 24 * 2**30
    assert p.provenance["links.h2d.bandwidth"] == "override: 32GB/s"
    assert p.provenance["memories.vram.capacity"] == "override: 24GiB"  # pre-graph paths still work
    assert p.links["d2h"] == base.links["d2h"] and p.compute == base.compute
    assert base.links["h2d"].bandwidth == 53e9  # the original is untouched
    assert load_profile("h100-sxm", ["links.h2d.bandwidth=32GB/s"]).links["h2d"].bandwidth == 32e9


def test_set_field_for_sweeps() -> None:
    base = load_profile("a100-80gb")
    p = set_field(base, "compute.peak_flops", "500 TFLOP/s")
    assert p.compute.peak_flops == 500e12 and p.provenance["processors.gpu.peak_flops.bf16"] == "override: 500 TFLOP/s"
    assert set_field(base, "processors.cpu.memory_bandwidth", "100 GB/s").processors["cpu"].memory_bandwidth == 100e9
    p = set_field(base, "links.h2d.latency", "10 us", provenance="sweep 3 of 8")
    assert p.links["h2d"].latency == 10e-6 and p.provenance["links.h2d.latency"] == "sweep 3 of 8"
    assert set_field(base, "links.h2d.copy_engines", "2").links["h2d"].copy_engines == 2
    assert set_field(base, "host_memory", "pageable").pageable
    assert set_field(base, "power.joules_per_byte.h2d", "5 pJ/bit").power.joules_per_byte["h2d"] == 40e-12


def test_overrides_can_add_a_link_together() -> None:
    p = apply_overrides(load_profile("h100-sxm"), ["links.ssd_d.bandwidth=20GB/s", "links.ssd_d.latency=10us"])
    assert p.ssd_link() is p.links["ssd_d"] and p.links["ssd_d"].bandwidth == 20e9
    with pytest.raises(UserError, match=r"links\.ssd_d\.latency: missing field"):
        apply_overrides(load_profile("h100-sxm"), ["links.ssd_d.bandwidth=20GB/s"])


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("links.h2d.bandwith=32GB/s", "did you mean 'links.h2d.bandwidth'"),
        ("links.pcie.bandwidth=32GB/s", "links.pcie.from: missing field"),
        ("links.h2d.duplex=triple", "not one of"),
        ("processors.gpu.peak_flops.fp64=1 TFLOP/s", "unknown profile field"),
        ("links.h2d.bandwidth=32", "bare number"),
        ("links.h2d.bandwidth=32 GB", "not a bandwidth unit"),
        ("links.h2d.bandwidth=0 GB/s", "must be positive"),
        ("links.h2d.bandwidth=-3 GB/s", "negative"),
        ("tiers.vram.capacity=512MiB", "more than the capacity"),
        ("links.h2d.copy_engines=2.5", "plain integer"),
        ("links.h2d.copy_engines=0", "at least 1"),
        ("host_memory=cached", "not one of"),
        ("links.h2d.bandwidth", "not of the form path=value"),
        ("=5 GB/s", "not of the form path=value"),
    ],
)
def test_bad_overrides_are_user_errors(override: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        apply_overrides(load_profile("h100-sxm"), [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_every_schema_path_is_overridable() -> None:
    for path in value_paths():
        spec = field_spec(path)
        assert spec is not None
    assert field_spec("links.h2d") is None and field_spec("memories.vram.capacity_") is None
    assert field_spec("tiers.vram.capacity").kind == "bytes"  # type: ignore[union-attr]  # pre-graph paths
    assert field_spec("compute.peak_flops").kind == "flops"  # type: ignore[union-attr]
    assert field_spec("links.h2d.copy_engines").kind == COUNT  # type: ignore[union-attr]


# --- validation errors in files --------------------------------------------------------------


def _base_doc() -> dict[str, Any]:
    return yaml.safe_load((PROFILES_DIR / "h100-sxm.yaml").read_text())


def _drop(*path: str):
    def f(d: dict[str, Any]) -> None:
        node = d
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
    return f


def _put(value: Any, *path: str):
    def f(d: dict[str, Any]) -> None:
        node = d
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return f


CASES = [
    ("missing field", _drop("processors", "gpu", "memory_bandwidth"), "processors.gpu.memory_bandwidth", "missing field"),
    ("missing section", _drop("power"), "power", "missing field"),
    ("missing link latency", _drop("links", "h2d", "latency"), "links.h2d.latency", "missing field"),
    ("missing link end", _drop("links", "h2d", "from"), "links.h2d.from", "missing field"),
    ("unknown field", _put({"value": "5 GB/s", "provenance": "x"}, "links", "h2d", "bandwith"), "links.h2d.bandwith", "unknown field"),
    ("unknown top-level field", _put("x", "vendor"), "vendor", "unknown field"),
    ("link to an absent memory", _put("hbm2", "links", "h2d", "to"), "links.h2d.to", "no memory 'hbm2'"),
    ("link to itself", _put("dram", "links", "h2d", "to"), "links.h2d.to", "two different memories"),
    ("processor on an absent memory", _put("hbm", "processors", "gpu", "memory"), "processors.gpu.memory", "no memory 'hbm'"),
    ("unknown processor kind", _put("tpu", "processors", "gpu", "kind"), "processors.gpu.kind", "not one of"),
    ("unknown dtype", _put("1 TFLOP/s", "processors", "gpu", "peak_flops", "fp64"), "processors.gpu.peak_flops.fp64", "unknown dtype"),
    ("no usable dtype", _put({"int8": {"value": "1 PFLOP/s", "provenance": "x"}}, "processors", "gpu", "peak_flops"), "processors.gpu.peak_flops", "at least bf16"),
    ("bad duplex", _put("both", "links", "h2d", "duplex"), "links.h2d.duplex", "not one of"),
    ("absent expert processor", _put("npu", "expert_processor"), "expert_processor", "no processor 'npu'"),
    ("bad overlap", _put("token", "overlap"), "overlap", "not one of"),
    ("bad storage reads", _put("mmap2", "storage_reads"), "storage_reads", "not one of"),
    ("curve and flat bandwidth", _put({"provenance": "x", "points": [["1 MiB", 1, "1 GB/s"]]}, "memories", "ssd", "throughput"),
     "memories.ssd.read_bandwidth", "not both"),
    ("curve row", _put({"provenance": "x", "points": [["1 MiB", 0, "1 GB/s"]]}, "memories", "dram", "throughput"),
     "memories.dram.throughput.points[0]", "queue depth"),
    ("curve without provenance", _put({"points": [["1 MiB", 1, "1 GB/s"]]}, "memories", "dram", "throughput"),
     "memories.dram.throughput.provenance", "missing field"),
    ("bare number", _put({"value": 53, "provenance": "x"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "bare number"),
    ("bare number string", _put({"value": "53", "provenance": "x"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "bare number"),
    ("bare number without mapping", _put(53e9, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "bare number"),
    ("bad unit", _put({"value": "53 GB", "provenance": "x"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "not a bandwidth unit"),
    ("unknown unit", _put({"value": "53 furlongs", "provenance": "x"}, "memories", "vram", "capacity"), "memories.vram.capacity", "not a bytes unit"),
    ("negative bandwidth", _put({"value": "-53 GB/s", "provenance": "x"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "negative"),
    ("zero bandwidth", _put({"value": "0 GB/s", "provenance": "x"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "must be positive"),
    ("zero capacity", _put({"value": "0 GiB", "provenance": "x"}, "memories", "dram", "capacity"), "memories.dram.capacity", "must be positive"),
    ("zero peak flops", _put({"value": "0 TFLOP/s", "provenance": "x"}, "processors", "gpu", "peak_flops", "bf16"), "processors.gpu.peak_flops.bf16", "must be positive"),
    ("capacity below reserved", _put({"value": "90 GiB", "provenance": "x"}, "memories", "vram", "reserved"), "memories.vram.reserved", "more than the capacity"),
    ("missing provenance", _put("53 GB/s", "links", "h2d", "bandwidth"), "links.h2d.bandwidth", "missing provenance"),
    ("missing provenance key", _put({"value": "53 GB/s"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth.provenance", "missing field"),
    ("empty provenance", _put({"value": "53 GB/s", "provenance": "  "}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth.provenance", "is empty"),
    ("provenance not text", _put({"value": "53 GB/s", "provenance": 7}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth.provenance", "expected a string"),
    ("extra key in value", _put({"value": "53 GB/s", "provenance": "x", "note": "y"}, "links", "h2d", "bandwidth"), "links.h2d.bandwidth.note", "unknown field"),
    ("count as string", _put("2", "links", "h2d", "copy_engines"), "links.h2d.copy_engines", "plain integer"),
    ("count as float", _put(2.0, "memories", "ssd", "queue_depth"), "memories.ssd.queue_depth", "plain integer"),
    ("count zero", _put(0, "memories", "ssd", "read_lanes"), "memories.ssd.read_lanes", "at least 1"),
    ("queue depth without bandwidth", _drop("memories", "ssd", "read_bandwidth"), "memories.ssd.queue_depth", "needs read_bandwidth"),
    ("energy for an absent link", _put("1 pJ/B", "power", "joules_per_byte", "c2c"), "power.joules_per_byte.c2c", "no such link"),
    ("active below idle", _put({"value": "10 W", "provenance": "x"}, "power", "active_watts"), "power.active_watts", "below idle_watts"),
    ("bad host memory", _put("cached", "host_memory"), "host_memory", "not one of"),
    ("name not text", _put(["h100"], "name"), "name", "expected a string"),
    ("section not a mapping", _put("fast", "processors"), "processors", "expected a mapping"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_validation_errors_name_file_and_field(tmp_path: Path, case: tuple[str, Any, str, str]) -> None:
    _, mutate, field, fragment = case
    doc = _base_doc()
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as info:
        profile_from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}"), message
    assert fragment in message
    assert "\n" not in message


def test_section_provenance_covers_plain_strings(tmp_path: Path) -> None:
    doc = _base_doc()
    doc["links"]["h2d"] = {"from": "dram", "to": "vram", "provenance": "measured here", "bandwidth": "40 GB/s", "latency": "6 us"}
    doc["provenance"] = "file-wide note"
    doc["processors"]["gpu"]["kernel_overhead"] = "4 us"
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = profile_from_yaml(path)
    assert p.links["h2d"].bandwidth == 40e9 and p.provenance["links.h2d.latency"] == "measured here"
    assert p.provenance["processors.gpu.kernel_overhead"] == "file-wide note"


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("name: a\nname: b\n", "duplicate key"),
        ("- a\n", "expected a mapping"),
        ("? [a, b]\n: 1\n", "not valid YAML"),
        ("when: 2026-13-45\n", "not valid YAML"),
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        profile_from_yaml(path)
    assert str(info.value).startswith(str(path)) and fragment in str(info.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(UserError, match="unknown hardware profile 'tpu-v9'"):
        load_profile("tpu-v9")


# --- fuzzing: only UserError, never another exception ----------------------------------------

_words = st.sampled_from(
    ["name", "description", "host_memory", "compute", "tiers", "links", "power", "vram", "dram", "ssd", "h2d", "d2h",
     "ssd_h", "ssd_d", "c2c", "value", "provenance", "capacity", "reserved", "bandwidth", "latency", "copy_engines",
     "queue_depth", "read_bandwidth", "peak_flops", "memory_bandwidth", "launch_overhead", "idle_watts", "active_watts",
     "joules_per_byte", "pinned"]
)
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(["53 GB/s", "80 GiB", "5 us", "700 W", "10 pJ/B", "989 TFLOP/s", "-1 GB", "0 s", "1e999 GB/s", "x"]),
)
_tree = st.recursive(_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(_words | st.text(max_size=4) | st.integers(), c, max_size=5), max_leaves=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_tree)
def test_fuzzed_documents_raise_only_user_errors(doc: Any) -> None:
    try:
        profile_from_mapping(doc, "fuzz.yaml")
    except UserError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_leaves_of_a_real_profile_raise_only_user_errors(data: st.DataObject) -> None:
    doc = copy.deepcopy(_BASE)
    node: Any = doc
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node, key=str)))
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            node[key] = data.draw(_tree)
            break
        node = node[key]
    try:
        profile_from_mapping(doc, "fuzz.yaml")
    except UserError:
        pass


_BASE = yaml.safe_load((PROFILES_DIR / "h100-sxm.yaml").read_text())


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abc:{}[]-?&*!|>'\"#%@ \n\t0123456789.,")), max_size=60))
def test_fuzzed_yaml_text_raises_only_user_errors(text: str) -> None:
    try:
        data = parse_yaml_mapping(text, "fuzz.yaml")
        profile_from_mapping(data, "fuzz.yaml")
    except UserError:
        pass


# --- command line ----------------------------------------------------------------------------


def test_cli_profiles_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 9 and {r["name"] for r in rows} >= set(REQUIRED)


def test_cli_profiles_show_json_gives_si_units_and_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "h100-sxm", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    h2d = data["links"]["h2d"]["bandwidth"]
    assert h2d["value"] == 53e9 and h2d["unit"] == "B/s" and "nvbandwidth" in h2d["provenance"]
    capacity = data["memories"]["vram"]["capacity"]
    assert capacity == {"value": 81559 * 2**20, "unit": "B", "provenance": capacity["provenance"]}
    assert data["links"]["h2d"]["latency"]["unit"] == "s"
    assert data["processors"]["gpu"]["peak_flops"]["bf16"]["unit"] == "FLOP/s"
    assert data["links"]["h2d"]["from"] == "dram" and data["links"]["h2d"]["to"] == "vram"
    routes = data["routes"]
    assert routes["target"] == "vram"
    assert routes["direct"]["ssd"] == {"memories": ["ssd", "dram", "vram"], "links": ["ssd_h", "h2d"]}


def test_cli_profiles_show_with_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "h100-sxm", "--set", "links.h2d.bandwidth=32GB/s", "--set", "tiers.vram.capacity=24GiB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["links"]["h2d"]["bandwidth"] == {"value": 32e9, "unit": "B/s", "provenance": "override: 32GB/s"}
    assert data["memories"]["vram"]["capacity"]["value"] == 24 * 2**30


def test_cli_profiles_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list"]) == 0
    assert "phone-oneplus-15r" in capsys.readouterr().out
    assert main(["profiles", "show", "gh200"]) == 0
    out = capsys.readouterr().out
    assert "links.c2c.bandwidth" in out and "375 GB/s" in out
    assert "ssd -ssd_h-> dram -c2c-> vram" in out and "processors.cpu.memory_bandwidth" in out


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = PROFILES_DIR / "rtx4090.yaml"
    assert main(["profiles", "validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    doc = _base_doc()
    doc["links"]["h2d"]["bandwidth"] = {"value": 53, "provenance": "x"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["profiles", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: links.h2d.bandwidth: bare number" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "tpu-v9"]) == 1
    assert main(["profiles", "show", "h100-sxm", "--set", "links.h2d.bandwidth=32"]) == 1
    assert main(["profiles", "validate", "/no/such/file.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("moesim: error:") == 3 and "Traceback" not in err
