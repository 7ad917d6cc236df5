"""`moesim calibrate --device cpu`: this machine's CPU as the compute device, measured, written as a profile.

On the CPU "device" the expert cache is DRAM (tier `vram`: the memory the compute device reads)
and experts live in a file (tier `ssd`), read straight into cache slots over link `ssd_d`: the
unified-memory shape Apple profiles use (moesim/hw_profiles/data/apple-m4-max.yaml), so the
simulator needs no new routes. Benchmarks (each point `trials` times, median and p10/p90):
  - memory bandwidth: a read (sum) and a copy of a buffer far larger than the last-level cache;
  - GEMM/GEMV rates by shape: x[T, H] @ W[H, I] at the expert shape for T = 1..256;
  - the expert operator (three matmuls, SiLU, product, gather and weighted index_add: what the
    reference harness runs per expert) over expert sizes and token counts, weights cycled through
    a ring larger than the last-level cache, fitted to t = overhead + bytes / bandwidth + FLOPs /
    rate: its overhead is the profile's per-kernel `launch_overhead`, its byte rate
    `memory_bandwidth`, the best GEMM rate `peak_flops`;
  - file reads with O_DIRECT by request size (4 KiB..32 MiB, at least `read_bytes` per reader and
    trial, so large requests see the drive's sustained rate rather than a burst) at queue depth 1
    (fitted to latency + bytes / bandwidth: link ssd_d) and at queue depths 2..N with threads (the
    curve goes to the report; the profile keeps queue_depth 1, the one-reader case the executor and
    the harness run).
Where the filesystem refuses O_DIRECT, reads are buffered after dropping the page cache and every
value measured from them says so. Nothing is fitted to a validation run. Imports torch.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moesim.hw_profiles.profile import HardwareProfile, Link, Power, Processor, Tier
from moesim.hw_profiles.schema import translate_path
from moesim.kernels.calibrate import CalibrationResult, round_sig, spread_text
from moesim.kernels.direct_io import ALIGN, DirectFile, aligned_buffer, write_file
from moesim.kernels.fitting import Spread, fit_copy_sweep, fit_kernel_times
from moesim.kernels.profile_yaml import CalibrationEnv, Measured
from moesim.units import format_bytes

KiB, MiB, GiB = 2**10, 2**20, 2**30


@dataclass(frozen=True)
class CpuCalibrateConfig:
    """What to measure on the CPU. `tiny()` is CI's run (seconds); the default takes about a minute."""

    trials: int = 5
    threads: int = 1  # torch intra-op threads: the executor and the harness run with one
    hidden: int = 768
    inter: int = 384
    expert_sizes: tuple[tuple[int, int], ...] = ((256, 128), (512, 256), (768, 384), (1024, 512))
    tokens: tuple[int, ...] = (1, 2, 4, 16, 64)
    gemm_tokens: tuple[int, ...] = (1, 4, 16, 64, 256)
    ring_bytes: int = 192 * MiB  # weights cycled per point: beyond a 48 MiB last-level cache
    memory_bytes: int = 256 * MiB
    read_sizes: tuple[int, ...] = tuple(4 * KiB * 2**i for i in range(14))  # 4 KiB .. 32 MiB
    read_bytes: int = 16 * MiB  # bytes each reader moves per trial at large sizes (at least 3 reads)
    read_trials: int = 3
    queue_depths: tuple[int, ...] = (1, 2, 4)
    file_bytes: int = 512 * MiB
    directory: str | None = None  # where the read-test file goes (default: the system temp dir)
    seed: int = 0

    @classmethod
    def tiny(cls, **kwargs: Any) -> "CpuCalibrateConfig":
        base: dict[str, Any] = dict(trials=3, hidden=128, inter=64, expert_sizes=((64, 32), (128, 64), (256, 128)),
                                    tokens=(1, 4), gemm_tokens=(1, 16), ring_bytes=8 * MiB, memory_bytes=16 * MiB,
                                    read_sizes=(4 * KiB, 64 * KiB, 1 * MiB), queue_depths=(1, 2), file_bytes=8 * MiB,
                                    read_bytes=2 * MiB)
        base.update(kwargs)
        return cls(**base)


def base_cpu_profile(name: str = "cpu-host") -> HardwareProfile:
    """The unmeasured skeleton of a CPU-device profile: capacities from the OS, the rest placeholders."""
    try:
        ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        ram = 16.0 * GiB
    disk = float(shutil.disk_usage(tempfile.gettempdir()).total)
    placeholder = "placeholder of moesim.kernels.cpu_calibrate, replaced by a measurement"
    prov = {
        "compute.peak_flops": placeholder, "compute.memory_bandwidth": placeholder,
        "compute.launch_overhead": placeholder,
        "tiers.vram.capacity": "os.sysconf physical memory of this host (the CPU's DRAM holds the expert cache)",
        "tiers.vram.reserved": "assumption: a quarter of DRAM for the OS, the model's dense weights and activations",
        "tiers.ssd.capacity": "shutil.disk_usage of the temp directory's filesystem",
        "links.ssd_d.bandwidth": placeholder, "links.ssd_d.latency": placeholder,
        "links.ssd_d.copy_engines": "one reader thread (the executor and the harness read misses one at a time)",
        "tiers.ssd.read_bandwidth": placeholder,
        "tiers.ssd.latency": "zero by construction: the measured per-read latency is the link's (links.ssd_d.latency)",
        "tiers.ssd.queue_depth": "one read in flight (the executor and the harness read misses one at a time); "
                                 "the queue-depth curve is in the calibration report",
        "power.idle_watts": "assumption: not measured (no power sensor read on the CPU path)",
        "power.active_watts": "assumption: not measured (no power sensor read on the CPU path)",
    }
    return HardwareProfile(
        name=name,
        description="this host's CPU as the compute device: DRAM holds the expert cache, experts live in a file",
        # the CPU is the expert processor and reads the cache tier ("vram" names the memory it computes from)
        processors={"cpu": Processor("cpu", "cpu", "vram", {"bf16": 1e11, "fp32": 1e11}, 1e10, 1e-5)},
        expert_processor="cpu",
        tiers={"vram": Tier("vram", capacity=ram, reserved=round(ram / 4)),
               "ssd": Tier("ssd", capacity=disk, read_bandwidth=1e9, latency=0.0, queue_depth=1)},
        links={"ssd_d": Link("ssd_d", bandwidth=1e9, latency=1e-4, copy_engines=1)},
        power=Power(idle_watts=10.0, active_watts=65.0),
        host_memory="pinned",
        provenance={translate_path(k, "cpu"): v for k, v in prov.items()},
    )


def cpu_env() -> CalibrationEnv:
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return CalibrationEnv(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        gpu=f"cpu ({model}, {os.cpu_count()} logical cores)", driver="none", torch=torch.__version__, cuda=None,
        triton=None, clocks=None, pcie=None, host_cpu=model,
        extra={"load_average_at_start": None if load is None else [round(v, 2) for v in load],
               "torch_threads": torch.get_num_threads()})


@dataclass
class _Collector:
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    measured: list[Measured] = field(default_factory=list)


def _median_time(fn: Callable[[], Any], trials: int, inner: int = 1) -> Spread:
    times = []
    fn()  # warm-up
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return Spread.of(times)


class CpuCalibrator:
    def __init__(self, config: CpuCalibrateConfig) -> None:
        import torch

        self.torch = torch
        self.cfg = config
        self.out = _Collector()
        self.gen = torch.Generator().manual_seed(config.seed)

    def run(self) -> CalibrationResult:
        torch = self.torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            env = cpu_env()
            self.memory()
            self.gemm()
            self.expert_operator()
            self.file_reads()
        finally:
            torch.set_num_threads(previous)
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        env.extra["load_average_at_end"] = None if load is None else [round(v, 2) for v in load]
        self.out.report["note"] = ("CPU device: DRAM is the cache tier (vram), the expert file the ssd tier; "
                                   f"torch threads {self.cfg.threads}; load average at start/end "
                                   f"{env.extra['load_average_at_start']}/{env.extra['load_average_at_end']}")
        return CalibrationResult(env=env, measured=self.out.measured, report=self.out.report, rows=self.out.rows)

    # ---- memory --------------------------------------------------------------------------------
    def memory(self) -> None:
        torch = self.torch
        n = self.cfg.memory_bytes // 4
        a = torch.rand(n, generator=self.gen)
        b = torch.empty_like(a)
        read = _median_time(lambda: a.sum(), self.cfg.trials)
        copy = _median_time(lambda: b.copy_(a), self.cfg.trials)
        read_bw, copy_bw = a.numel() * 4 / read.median, 2 * a.numel() * 4 / copy.median
        for kind, s, bw in (("read", read, read_bw), ("copy", copy, copy_bw)):
            self.out.rows.append({"bench": "memory", "kind": kind, "bytes": a.numel() * 4, "median_s": s.median,
                                  "p10_s": s.p10, "p90_s": s.p90, "Bps": bw})
        self.out.report["memory"] = {"read_Bps": read_bw, "copy_Bps": copy_bw, "buffer_bytes": a.numel() * 4}
        self.out.measured.append(Measured(
            "compute.cpu_memory_bandwidth", round_sig(read_bw), "bandwidth",
            f"sum over a {format_bytes(a.numel() * 4)} fp32 buffer, n={read.n} median (copy: "
            f"{copy_bw / 1e9:.3g} GB/s read+write)"))

    # ---- GEMM / GEMV rates ---------------------------------------------------------------------
    def gemm(self) -> None:
        torch = self.torch
        h, i = self.cfg.hidden, self.cfg.inter
        w = torch.randn(h, i, generator=self.gen)
        best = 0.0
        points = []
        for t in self.cfg.gemm_tokens:
            x = torch.randn(t, h, generator=self.gen)
            s = _median_time(lambda: x @ w, self.cfg.trials, inner=5)
            rate = 2.0 * t * h * i / s.median
            best = max(best, rate)
            points.append({"tokens": t, "median_s": s.median, "flops_per_s": rate,
                           "weight_Bps": h * i * 4 / s.median})
            self.out.rows.append({"bench": "gemm", "tokens": t, "hidden": h, "inter": i, "median_s": s.median,
                                  "p10_s": s.p10, "p90_s": s.p90, "flops_per_s": rate})
        self.out.report["gemm"] = {"shape": [h, i], "dtype": "fp32", "points": points}
        self.out.measured.append(Measured(
            "compute.peak_flops", round_sig(best), "flops",
            f"best fp32 x[T,{h}] @ W[{h},{i}] rate over T in {list(self.cfg.gemm_tokens)}, n={self.cfg.trials} "
            "medians of 5 calls (weights in cache: a compute ceiling, not a memory one)"))
        self.out.measured.append(Measured(
            "compute.cpu_flops", round_sig(best), "flops", "as compute.peak_flops (the CPU is the device)"))

    # ---- the expert operator -------------------------------------------------------------------
    def expert_operator(self) -> None:
        from moesim.kernels.cpu_expert import swiglu_experts

        torch = self.torch
        byte_col, flop_col, time_col = [], [], []
        self._tokens_col: list[int] = []
        for h, i in self.cfg.expert_sizes:
            nbytes = 3 * h * i * 4
            ring = max(2, int(self.cfg.ring_bytes // nbytes))
            weights = [tuple(torch.randn(*shape, generator=self.gen) / 16 for shape in ((h, i), (h, i), (i, h)))
                       for _ in range(ring)]
            for t in self.cfg.tokens:
                x = torch.randn(t, h, generator=self.gen)
                pos = [0]

                def one() -> None:
                    k = pos[0] = (pos[0] + 1) % ring
                    rows = torch.arange(t)
                    gate = torch.ones(t)
                    out = torch.zeros(t, h)
                    swiglu_experts(x, out, [(rows, gate, weights[k])])

                s = _median_time(one, self.cfg.trials, inner=max(1, min(ring, 8)))
                flops = 2.0 * t * 3 * h * i
                byte_col.append(nbytes)
                flop_col.append(flops)
                self._tokens_col.append(t)
                time_col.append(s.median)
                self.out.rows.append({"bench": "expert", "hidden": h, "inter": i, "tokens": t, "bytes": nbytes,
                                      "flops": flops, "median_s": s.median, "p10_s": s.p10, "p90_s": s.p90})
        fit = fit_kernel_times(byte_col, flop_col, time_col)
        self.out.report["expert_operator"] = {**fit.to_dict(), "sizes": [list(s) for s in self.cfg.expert_sizes],
                                              "tokens": list(self.cfg.tokens)}
        where = (f"fit t = overhead + bytes/bandwidth + FLOPs/rate of one SwiGLU expert (moesim/kernels/cpu_expert.py) "
                 f"over {len(time_col)} points ({len(self.cfg.expert_sizes)} sizes x tokens {list(self.cfg.tokens)}), "
                 f"weights cycled beyond the last-level cache, max |relative residual| {fit.max_abs_residual:.1%}")
        self.out.measured.append(Measured("compute.launch_overhead", round_sig(fit.overhead_s), "time",
                                          f"per-expert fixed cost: {where}"))
        if fit.bandwidth_Bps:
            self.out.measured.append(Measured("compute.memory_bandwidth", round_sig(fit.bandwidth_Bps), "bandwidth",
                                              f"weight bytes per second: {where}"))
        else:  # noise left the fit no byte term: the single-token rate at the largest size, said as such
            t1 = [(b, t) for b, f, t, tok in zip(byte_col, flop_col, time_col, self._tokens_col) if tok == min(
                self.cfg.tokens)]
            b, t = max(t1)
            self.out.measured.append(Measured(
                "compute.memory_bandwidth", round_sig(b / t), "bandwidth",
                f"the fit found no byte term ({where}); bytes / time of one expert of {format_bytes(b)} on "
                f"{min(self.cfg.tokens)} token(s) instead"))

    # ---- file reads ----------------------------------------------------------------------------
    def file_reads(self) -> None:
        cfg = self.cfg
        directory = Path(cfg.directory or tempfile.gettempdir())
        size = max(cfg.file_bytes, 4 * max(cfg.read_sizes))
        chunk = os.urandom(MiB)
        with tempfile.TemporaryDirectory(prefix="moesim-cal-", dir=directory) as tmp:
            path = Path(tmp) / "reads.bin"
            write_file(path, (chunk for _ in range(size // MiB)))
            files = [DirectFile(path) for _ in range(max(cfg.queue_depths))]
            try:
                mode, note = files[0].mode, files[0].note
                rng = np.random.default_rng(cfg.seed)
                sweep_sizes, sweep_times, curve = [], [], []
                for qd in cfg.queue_depths:
                    for req in cfg.read_sizes:
                        per_thread = max(3, min(64, cfg.read_bytes // req))
                        offsets = [rng.integers(0, (size - req) // ALIGN, per_thread) * ALIGN for _ in range(qd)]
                        bufs = [memoryview(aligned_buffer(req)) for _ in range(qd)]
                        trials = []
                        for _ in range(min(cfg.trials, cfg.read_trials)):
                            elapsed = _parallel_reads(files[:qd], bufs, offsets, req)
                            trials.append(elapsed)
                        s = Spread.of(trials)
                        per_read = s.median / per_thread
                        agg = qd * per_thread * req / s.median
                        curve.append({"queue_depth": qd, "bytes": req, "per_read_s": per_read, "aggregate_Bps": agg})
                        self.out.rows.append({"bench": "file_read", "mode": mode, "queue_depth": qd, "bytes": req,
                                              "reads": qd * per_thread, "median_s": s.median, "p10_s": s.p10,
                                              "p90_s": s.p90, "per_read_s": per_read, "aggregate_Bps": agg})
                        if qd == 1:
                            sweep_sizes.append(req)
                            sweep_times.append(per_read)
            finally:
                for f in files:
                    f.close()
        fit = fit_copy_sweep(sweep_sizes, sweep_times)
        best = max(curve, key=lambda p: p["aggregate_Bps"])
        self.out.report["file_reads"] = {"mode": mode, "note": note, "file_bytes": size, "directory": str(directory),
                                         "qd1_fit": fit.to_dict(), "curve": curve, "best": best}
        how = "O_DIRECT" if mode == "o_direct" else f"buffered ({note})"
        detail = (f"{how} random reads of {format_bytes(min(sweep_sizes))}..{format_bytes(max(sweep_sizes))} from a "
                  f"{format_bytes(size)} file in {directory}, queue depth 1, fit t = latency + bytes/bandwidth, "
                  f"max |relative residual| {fit.max_abs_residual:.1%}")
        self.out.measured += [
            Measured("links.ssd_d.bandwidth", round_sig(fit.bandwidth_Bps), "bandwidth", detail),
            Measured("links.ssd_d.latency", round_sig(fit.latency_s), "time", detail),
            Measured("tiers.ssd.read_bandwidth", round_sig(fit.bandwidth_Bps), "bandwidth",
                     f"{detail}; best aggregate {best['aggregate_Bps'] / 1e9:.3g} GB/s at queue depth "
                     f"{best['queue_depth']} x {format_bytes(best['bytes'])} (report: file_reads.curve)"),
        ]


def _parallel_reads(files: list[DirectFile], bufs: list[memoryview], offsets: list[np.ndarray], req: int) -> float:
    """Seconds for every thread to read its offsets (one thread per queue slot; preadv drops the GIL)."""
    if len(files) == 1:
        t0 = time.perf_counter()
        for off in offsets[0]:
            files[0].read_into(bufs[0], int(off), req)
        return time.perf_counter() - t0
    barrier = threading.Barrier(len(files) + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for off in offsets[k]:
            files[k].read_into(bufs[k], int(off), req)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(files))]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - t0


def calibrate_cpu(config: CpuCalibrateConfig) -> CalibrationResult:
    return CpuCalibrator(config).run()


def summary_lines(result: CalibrationResult) -> list[str]:
    """One line per measured value with its spread text where the report has one (for the CLI)."""
    return [f"{m.path}: {m.value:.4g}" for m in result.measured]


__all__ = ["CpuCalibrateConfig", "base_cpu_profile", "calibrate_cpu", "spread_text"]
