"""The GPU microbenchmarks behind `moesim calibrate` (GPU only: imports torch when a Calibrator is made).

Method: every GPU time is a CUDA-event pair on the stream that
did the work; copies are timed as n back-to-back copies behind a sleep kernel that holds the stream
while they are enqueued (nvbandwidth-style gating, so host enqueue cost stays outside the timed
region); each point is repeated `trials` times and reported as median with p10/p90; kernels are
timed on random non-zero weights with L2 flushed between repetitions; clocks are recorded, never
locked. Benchmarks:
  - copy-size sweep, pinned and pageable, H2D and D2H, fitted to latency + bytes / bandwidth;
  - both directions at once (bidirectional derate) and two H2D streams at once (copy engines);
  - the Triton expert kernel over token histograms (tokens per expert x active experts);
  - copy/compute overlap slowdown of each;
  - kernel launch overhead; HBM copy bandwidth (device-to-device, read + write bytes);
  - NVML PCIe bytes vs bytes issued, and energy per GB, when NVML answers.
Each benchmark appends raw rows, a report entry and, where the profile has a field for it, a
Measured value; moesim.kernels.calibrate writes them out.
"""
from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import numpy as np

from moesim.kernels.calibrate import CalibrationResult
from moesim.kernels.gpu_copy_bench import CopyBenchmarks
from moesim.kernels.gpu_kernel_bench import KernelBenchmarks
from moesim.kernels.profile_yaml import CalibrationEnv, Measured


class Calibrator(CopyBenchmarks, KernelBenchmarks):
    """Runs the benchmarks on one CUDA device and collects rows, fits and profile values."""

    # -- environment --
    def environment(self) -> CalibrationEnv:
        torch = self.torch
        try:
            import triton

            triton_version = triton.__version__
        except ImportError:
            triton_version = None
        info = self.telemetry.device_info()
        props = torch.cuda.get_device_properties(self.device)
        summary = _load_summary(self.telemetry.samples())
        return CalibrationEnv(
            date=datetime.date.today().isoformat(),
            gpu=torch.cuda.get_device_name(self.device),
            driver=info.get("driver"),
            torch=torch.__version__,
            cuda=torch.version.cuda,
            triton=triton_version,
            clocks=summary.get("clocks"),
            pcie=summary.get("pcie"),
            host_cpu=_host_cpu(),
            extra={"sm_count": props.multi_processor_count,
                   "l2_bytes": int(getattr(props, "L2_cache_size", 0)) or None,
                   "telemetry": info.get("telemetry"), "telemetry_reason": info.get("reason")},
        )

    def run(self) -> CalibrationResult:
        self.telemetry.start()  # samples clocks, PCIe link and energy all along (every interval_s)
        self.launch_overhead()
        self.copy_sweeps()
        self.concurrent_copies()
        self.hbm_bandwidth()
        self.expert_kernel()
        self.overlap()
        self.nvml_crosscheck()
        _, total = self.torch.cuda.mem_get_info(self.device)
        self.measured.append(Measured("tiers.vram.capacity", int(total), "bytes",
                                      "device memory total from torch.cuda.mem_get_info (device property)"))
        self.telemetry.stop()
        env = self.environment()
        self.telemetry.close()
        return CalibrationResult(env=env, measured=self.measured, report=self.report, rows=self.rows)


def _load_summary(samples: list[Any]) -> dict[str, str]:
    """Clock and PCIe link text from samples taken under load (idle links downtrain, idle clocks are low)."""
    out: dict[str, str] = {}
    sm = [s.sm_clock_Hz for s in samples if s.sm_clock_Hz]
    mem = [s.mem_clock_Hz for s in samples if s.mem_clock_Hz]
    if sm:
        out["clocks"] = f"SM max {max(sm) / 1e6:.0f} MHz median {float(np.median(sm)) / 1e6:.0f} MHz" + (
            f" mem max {max(mem) / 1e6:.0f} MHz" if mem else "")
    gens = [(s.pcie_gen, s.pcie_width, s.pcie_gen_max, s.pcie_width_max) for s in samples if s.pcie_gen]
    if gens:
        g, w, gm, wm = max(gens)
        out["pcie"] = f"gen {g} x{w} (max gen {gm} x{wm})"
    reasons = [s.clock_event_reasons for s in samples if s.clock_event_reasons]
    if reasons and "clocks" in out:
        mask = 0
        for r in reasons:
            mask |= r
        out["clocks"] += f" reasons 0x{mask:x}"
    return out


def _host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
