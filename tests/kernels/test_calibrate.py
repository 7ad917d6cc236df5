"""calibrate on CPU: the fits recover known latency/bandwidth from synthetic timings, the profile YAML
round-trips through moesim.units with provenance on every value, and the CLI's no-GPU error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from moesim.hw_profiles.schema import translate_path
from hypothesis import given, settings, strategies as st

from moesim.cli import main
from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier
from moesim.kernels.calibrate import (CalibrateConfig, CalibrationResult, copy_measurements, output_paths,
                                      write_outputs)
from moesim.kernels.fitting import Spread, fit_copy_sweep, fit_kernel_times, robust_relative_fit
from moesim.kernels.profile_yaml import CalibrationEnv, Measured
from moesim.units import format_quantity, parse_quantity

ALPHA, BETA = 7e-6, 53e9
SIZES = [2**k for k in range(12, 31)]  # 4 KiB .. 1 GiB


def test_noiseless_sweep_gives_back_latency_and_bandwidth():
    fit = fit_copy_sweep(SIZES, [ALPHA + s / BETA for s in SIZES])
    assert fit.latency_s == pytest.approx(ALPHA, rel=1e-9)
    assert fit.bandwidth_Bps == pytest.approx(BETA, rel=1e-9)
    assert fit.large_bandwidth_Bps == pytest.approx(BETA, rel=1e-6)
    assert fit.max_abs_residual < 1e-9 and len(fit.to_dict()["points"]) == 19


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(1e-6, 1e-4), beta=st.floats(1e9, 1e12))
def test_any_latency_and_bandwidth_are_recovered_from_exact_timings(alpha, beta):
    fit = fit_copy_sweep(SIZES, [alpha + s / beta for s in SIZES])
    assert fit.latency_s == pytest.approx(alpha, rel=1e-6)
    assert fit.bandwidth_Bps == pytest.approx(beta, rel=1e-6)


def test_noisy_trials_with_outliers_still_recover_the_parameters():
    rng = np.random.default_rng(0)
    sizes, times = [], []
    for s in SIZES:
        for _ in range(5):
            sizes.append(s)
            times.append((ALPHA + s / BETA) * rng.lognormal(0, 0.03))
    times[7] *= 4  # a preempted trial: the per-size median absorbs it
    fit = fit_copy_sweep(sizes, times)
    assert fit.latency_s == pytest.approx(ALPHA, rel=0.1)
    assert fit.bandwidth_Bps == pytest.approx(BETA, rel=0.02)


def test_a_bad_size_is_down_weighted_and_shows_in_its_residual():
    times = [ALPHA + s / BETA for s in SIZES]
    times[10] *= 2.0  # every trial of one size is slow (say, a clock dip)
    fit = fit_copy_sweep(SIZES, times)
    assert fit.bandwidth_Bps == pytest.approx(BETA, rel=0.01)
    assert fit.latency_s == pytest.approx(ALPHA, rel=0.05)
    assert fit.relative_residuals[10] == pytest.approx(0.5, abs=0.01)  # (2t - t) / 2t
    others = np.delete(np.abs(fit.relative_residuals), 10)
    assert others.max() < 0.01


def test_coefficients_stay_non_negative():
    fit = robust_relative_fit(np.column_stack([np.ones(4), [1.0, 2.0, 3.0, 4.0]]), np.array([0.5, 1.9, 2.9, 3.9]))
    assert np.all(fit.coef >= 0)


def test_kernel_model_recovers_overhead_bandwidth_and_flop_rate():
    expert_bytes, expert_params = 12582912, 6291456
    b, f, t = [], [], []
    for active in (1, 2, 4, 8, 16, 32, 64):
        for tokens in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            b.append(active * expert_bytes)
            f.append(2 * expert_params * tokens * active)
            t.append(6e-6 + b[-1] / 2.6e12 + f[-1] / 5.5e14)
    fit = fit_kernel_times(b, f, t)
    assert fit.overhead_s == pytest.approx(6e-6, rel=1e-6)
    assert fit.bandwidth_Bps == pytest.approx(2.6e12, rel=1e-6)
    assert fit.flop_rate == pytest.approx(5.5e14, rel=1e-6)
    assert fit.predict(b[5], f[5]) == pytest.approx(t[5])


def test_spread_is_median_and_deciles():
    s = Spread.of(list(range(1, 12)))
    assert (s.n, s.median, s.p10, s.p90) == (11, 6.0, 2.0, 10.0)


KIND_RANGES = {"bandwidth": (1e3, 1e13), "time": (1e-9, 10.0), "flops": (1e6, 1e16), "power": (1e-2, 1e4),
               "energy_per_byte": (1e-13, 1e-6)}


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(KIND_RANGES)), u=st.floats(0, 1))
def test_formatted_quantities_parse_back_to_the_same_value(kind, u):
    lo, hi = KIND_RANGES[kind]
    value = float(lo * (hi / lo) ** u)
    text = format_quantity(value, kind)
    assert parse_quantity(text, kind) == pytest.approx(value, rel=1e-9), text


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2**45))
def test_byte_counts_are_written_exactly(n):
    assert parse_quantity(format_quantity(n, "bytes"), "bytes") == n


def test_readable_units():
    assert format_quantity(53e9, "bandwidth") == "53 GB/s"
    assert format_quantity(7e-6, "time") == "7 us"
    assert format_quantity(80 * 2**30, "bytes") == "80 GiB"
    assert format_quantity(989e12, "flops") == "989 TFLOP/s"
    assert format_quantity(52.93e9, "bandwidth", digits=3) == "52.9 GB/s"


def base_profile() -> HardwareProfile:
    prov = {
        "compute.peak_flops": "datasheet https://example.org/h100",
        "compute.memory_bandwidth": "measured 2026-10 one H100 (hardware.md §2)",
        "compute.launch_overhead": "assumption: 5 us",
        "tiers.vram.capacity": "datasheet", "tiers.vram.reserved": "assumption: runtime + KV",
        "tiers.dram.capacity": "assumption: 1 TiB host", "tiers.dram.bandwidth": "assumption",
        "links.h2d.bandwidth": "nvbandwidth issue 24", "links.h2d.latency": "DualPath §5.2",
        "links.h2d.copy_engines": "assumption",
        "power.idle_watts": "assumption: 70 W", "power.active_watts": "datasheet TDP",
        "power.joules_per_byte.h2d": "assumption: 10 pJ/B",
    }
    return HardwareProfile(
        name="h100-sxm", description="H100 SXM5 80GB",
        compute=Compute(peak_flops=989e12, memory_bandwidth=3.0e12, launch_overhead=5e-6),
        tiers={"vram": Tier("vram", capacity=80 * 2**30, reserved=8 * 2**30),
               "dram": Tier("dram", capacity=2**40, bandwidth=200e9)},
        links={"h2d": Link("h2d", bandwidth=53e9, latency=5e-6, copy_engines=1)},
        power=Power(idle_watts=70.0, active_watts=700.0, joules_per_byte={"h2d": 1e-11}),
        provenance=prov,
    )


def synthetic_result() -> CalibrationResult:
    sizes = np.array(SIZES, dtype=float)
    pinned = fit_copy_sweep(sizes, ALPHA + sizes / BETA)
    pageable = fit_copy_sweep(sizes, 2e-5 + sizes / 11e9)
    d2h = fit_copy_sweep(sizes, 6e-6 + sizes / 52e9)
    measured = copy_measurements("links.h2d", pinned, pageable, Spread(5, 52.9e9, 52.1e9, 53.3e9), 5)
    measured += copy_measurements("links.d2h", d2h, None, Spread(5, 51.8e9, 51.0e9, 52.2e9), 5)
    measured += [Measured("links.h2d.copy_engines", 2, "count", "two streams move 1.9x"),
                 Measured("compute.memory_bandwidth", 3.01e12, "bandwidth", "n=5 median 3.01 TB/s"),
                 Measured("compute.launch_overhead", 4.2e-6, "time", "n=5 median 4.2 us"),
                 Measured("tiers.vram.capacity", 85520809984, "bytes", "torch.cuda.mem_get_info total")]
    env = CalibrationEnv(date="2026-11-23", gpu="NVIDIA H100 80GB HBM3", driver="580.65", torch="2.11.0",
                         cuda="13.0", triton="3.6.0", clocks="SM max 1980 MHz median 1980 MHz mem max 2619 MHz",
                         pcie="gen 5 x16 (max gen 5 x16)")
    rows = [{"bench": "copy", "direction": "h2d", "memory": "pinned", "bytes": s, "copies": 1, "trial": 0,
             "seconds": ALPHA + s / BETA} for s in SIZES]
    return CalibrationResult(env=env, measured=measured, report={"copy_fits": {"h2d_pinned": pinned.to_dict()}},
                             rows=rows)


def leaves(doc, path=()):
    """(dotted path, entry) for every {value, provenance} entry in a profile document."""
    for key, value in doc.items():
        if isinstance(value, dict) and "value" in value and "provenance" in value:
            yield ".".join(path + (key,)), value
        elif isinstance(value, dict):
            yield from leaves(value, path + (key,))


def test_written_profile_has_measured_values_with_provenance_and_keeps_the_rest(tmp_path):
    result = synthetic_result()
    paths = write_outputs(result, base_profile(), tmp_path / "my-h100.yaml", "my-h100")
    doc = yaml.safe_load(Path(paths["profile"]).read_text())
    assert doc["name"] == "my-h100" and doc["host_memory"] == "pinned"
    entries = dict(leaves(doc))
    device = base_profile().expert_processor
    measured = {translate_path(m.path, device): m for m in result.measured}
    for path, m in measured.items():
        entry = entries[path]
        if m.kind == "count":
            assert entry["value"] == m.value and isinstance(entry["value"], int)
        else:
            assert parse_quantity(entry["value"], m.kind) == pytest.approx(m.value, rel=1e-9)
        prov = entry["provenance"]
        for needle in ("measured 2026-11-23", "NVIDIA H100 80GB HBM3", "driver 580.65", "torch 2.11.0",
                       "triton 3.6.0", "clocks SM max 1980 MHz", "tool moesim calibrate"):
            assert needle in prov, (path, prov)
    assert "n=5 median 52.9 GB/s p10/p90 52.1/53.3 GB/s" in entries["links.h2d.bandwidth"]["provenance"]
    assert parse_quantity(entries["links.h2d.bandwidth"]["value"], "bandwidth") == pytest.approx(BETA, rel=1e-3)
    assert parse_quantity(entries["links.h2d.latency"]["value"], "time") == pytest.approx(ALPHA, rel=1e-3)
    # not measured: copied with the base profile's own provenance
    base = base_profile()
    for path in ("processors.gpu.peak_flops.bf16", "memories.vram.reserved", "memories.dram.bandwidth",
                 "power.idle_watts", "power.joules_per_byte.h2d"):
        assert entries[path]["provenance"] == base.provenance[path]
    assert parse_quantity(entries["processors.gpu.peak_flops.bf16"]["value"], "flops") == 989e12
    assert parse_quantity(entries["power.joules_per_byte.h2d"]["value"], "energy_per_byte") == pytest.approx(1e-11)
    assert "links.d2h.pageable_bandwidth" not in entries  # not measured, not in the base
    report = json.loads(Path(paths["report"]).read_text())
    assert report["env"]["gpu"] == "NVIDIA H100 80GB HBM3" and report["copy_fits"]["h2d_pinned"]["points"]
    csv_lines = Path(paths["raw"]).read_text().splitlines()
    assert csv_lines[0] == "bench,direction,memory,bytes,copies,trial,seconds" and len(csv_lines) == 20


def test_writing_is_deterministic_and_atomic(tmp_path):
    a, b = tmp_path / "a" / "p.yaml", tmp_path / "b" / "p.yaml"
    write_outputs(synthetic_result(), base_profile(), a, "p")
    write_outputs(synthetic_result(), base_profile(), b, "p")
    for x, y in zip(output_paths(a), output_paths(b)):
        assert x.read_bytes() == y.read_bytes()
    bad = synthetic_result()
    bad.measured.append(Measured("links.h2d.latency", float("nan"), "time", "broken"))
    with pytest.raises(ValueError):
        write_outputs(bad, base_profile(), tmp_path / "c" / "p.yaml", "p")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_written_profile_loads_with_the_profile_loader(tmp_path):
    from moesim.hw_profiles import loader
    paths = write_outputs(synthetic_result(), base_profile(), tmp_path / "p.yaml", "p")
    profile = loader.load_profile(paths["profile"])
    assert profile.links["h2d"].bandwidth == pytest.approx(BETA, rel=1e-3)
    assert profile.links["h2d"].copy_engines == 2
    assert profile.compute.peak_flops == 989e12


def test_default_sweep_is_4KiB_to_1GiB_in_powers_of_two():
    sizes = CalibrateConfig().sizes()
    assert sizes[0] == 4096 and sizes[-1] == 2**30 and len(sizes) == 19
    assert CalibrateConfig.quick().sizes()[-1] == 2**28


def test_calibrate_without_cuda_exits_1_with_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    out = tmp_path / "p.yaml"
    assert main(["calibrate", "--base", "h100-sxm", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == "moesim: error: no CUDA device: calibrate needs a GPU\n"
    assert not out.exists()


def test_cli_works_on_a_core_install_without_torch_or_triton():
    """`moesim --help` lists calibrate, and calibrate says why it cannot run, with torch unimportable."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['triton'] = None\n"
            "from moesim.cli import main\n"
            "import moesim.kernels.telemetry, moesim.kernels.calibrate, moesim.kernels.shapes\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    help_run = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, env=env)
    assert help_run.returncode == 0 and "calibrate" in help_run.stdout
    run = subprocess.run([sys.executable, "-c", code, "calibrate", "--base", "x", "--out", "y.yaml"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "moesim: error: no CUDA device: calibrate needs a GPU (torch is not installed: pip install 'moesim[gpu]')"]


@pytest.mark.gpu
def test_a_tiny_calibration_runs_end_to_end_on_a_gpu(tmp_path):
    from moesim.kernels.calibrate import calibrate
    from moesim.kernels.shapes import ExpertShapes

    config = CalibrateConfig(max_size=4 * 2**20, trials=2, kernel_tokens=(1, 16), kernel_active=(1, 4),
                             kernel_reps=2, nvml_window_s=0.3, top_k=2,
                             shapes=ExpertShapes(hidden=512, inter=256, n_layers=1, n_experts=8, dtype="bf16"))
    result = calibrate(config)
    values = {m.path: m.value for m in result.measured}
    for path in ("links.h2d.bandwidth", "links.d2h.bandwidth", "compute.memory_bandwidth",
                 "compute.launch_overhead", "tiers.vram.capacity"):
        assert values[path] > 0, path
    assert values["links.h2d.copy_engines"] in (1, 2)
    assert len(result.report["expert_kernel"]["points"]) == 4
    paths = write_outputs(result, base_profile(), tmp_path / "gpu.yaml", "gpu")
    doc = yaml.safe_load(Path(paths["profile"]).read_text())
    assert "measured" in doc["links"]["h2d"]["bandwidth"]["provenance"]
