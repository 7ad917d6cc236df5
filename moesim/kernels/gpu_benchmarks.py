"""The GPU microbenchmarks behind `moesim calibrate` (GPU only: imports torch when a Calibrator is made).

Method (reference/gpu_method.md §1-§3, §9): every GPU time is a CUDA-event pair on the stream that
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from moesim.kernels.calibrate import (COPY_TARGET_BYTES, GiB, MiB, CalibrateConfig, CalibrationResult,
                                      round_sig, copy_measurements, spread_text)
from moesim.kernels.fitting import CopyFit, Spread, fit_copy_sweep, fit_kernel_times
from moesim.kernels.profile_yaml import CalibrationEnv, Measured, format_quantity
from moesim.kernels.shapes import ExpertShapes
from moesim.units import format_bytes


SAMPLE_INTERVAL_S = 0.1  # background clock/energy sampling; light enough not to disturb host timings


class Calibrator:
    """Runs the benchmarks on one CUDA device and collects rows, fits and profile values."""

    def __init__(self, config: CalibrateConfig) -> None:
        import torch

        from moesim.kernels.telemetry import open_telemetry

        self.torch = torch
        self.cfg = config
        self.device = torch.device("cuda", config.device_index)
        torch.cuda.set_device(self.device)
        self.compute = torch.cuda.current_stream(self.device)
        self.side = torch.cuda.Stream(device=self.device)
        self.side2 = torch.cuda.Stream(device=self.device)
        self.telemetry = open_telemetry(config.device_index, interval_s=SAMPLE_INTERVAL_S)
        self.rows: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}
        self.measured: list[Measured] = []
        self.gen = torch.Generator(device="cpu").manual_seed(config.seed)
        self.sleep_cycles = 4_000_000  # ~2 ms at 2 GHz (~10 ms at an idle 345 MHz): covers enqueueing
        self.host_launch_s = 50e-6

    # -- timing primitives --
    def _event(self, stream: Any) -> Any:
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record(stream)
        return ev

    def _gate(self, stream: Any, seconds: float = 0.0) -> None:
        """Hold `stream` with a sleep kernel so the work enqueued behind it starts together."""
        cycles = self.sleep_cycles if seconds <= 0 else int(seconds * self.sleep_cycles / 2e-3)
        with self.torch.cuda.stream(stream):
            self.torch.cuda._sleep(cycles)

    def timed_copies(self, dst: Any, src: Any, n: int, stream: Any, gate: bool = True) -> float:
        """Seconds per copy of n back-to-back copies src -> dst on `stream`."""
        torch = self.torch
        if gate:
            self._gate(stream)
        with torch.cuda.stream(stream):
            start = self._event(stream)
            for _ in range(n):
                dst.copy_(src, non_blocking=True)
            end = self._event(stream)
        end.synchronize()
        return start.elapsed_time(end) * 1e-3 / n

    def _random_bytes(self, n: int, pin: bool) -> Any:
        torch = self.torch
        buf = torch.empty(n, dtype=torch.uint8, pin_memory=pin)
        chunk = 64 * MiB
        for lo in range(0, n, chunk):  # touch every page now, outside any timed region
            hi = min(n, lo + chunk)
            buf[lo:hi] = torch.randint(0, 256, (hi - lo,), dtype=torch.uint8, generator=self.gen)
        return buf

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

    # -- benchmarks --
    def copy_sweeps(self) -> None:
        torch, cfg = self.torch, self.cfg
        sizes = cfg.sizes()
        top = sizes[-1]
        pinned = self._random_bytes(top, pin=True)
        pageable = self._random_bytes(top, pin=False)
        host_out_pinned = torch.empty(top, dtype=torch.uint8, pin_memory=True)
        host_out_pageable = torch.empty(top, dtype=torch.uint8)
        dev = torch.empty(top, dtype=torch.uint8, device=self.device)
        dev.copy_(pinned)
        fits: dict[str, CopyFit] = {}
        spreads: dict[str, Spread] = {}
        for direction in ("h2d", "d2h"):
            for memory in ("pinned", "pageable"):
                key = f"{direction}_{memory}"
                if direction == "h2d":
                    src_all, dst_all = (pinned if memory == "pinned" else pageable), dev
                else:
                    src_all, dst_all = dev, (host_out_pinned if memory == "pinned" else host_out_pageable)
                xs, ts = [], []
                for size in sizes:
                    n = max(1, min(64, COPY_TARGET_BYTES // size))
                    src, dst = src_all[:size], dst_all[:size]
                    self.timed_copies(dst, src, 1, self.side, gate=False)  # warm-up
                    per_size = []
                    for trial in range(cfg.trials):
                        t = self.timed_copies(dst, src, n, self.side, gate=memory == "pinned")
                        per_size.append(t)
                        self.rows.append({"bench": "copy", "direction": direction, "memory": memory, "bytes": size,
                                          "copies": n, "trial": trial, "seconds": t})
                    xs += [size] * len(per_size)
                    ts += per_size
                    if size == top:
                        spreads[key] = Spread.of([size / t for t in per_size])
                fits[key] = fit_copy_sweep(xs, ts)
        self.report["copy_fits"] = {k: f.to_dict() for k, f in fits.items()}
        self.report["copy_bandwidth_at_max_size"] = {k: vars(s) for k, s in spreads.items()}
        self.measured += copy_measurements("links.h2d", fits["h2d_pinned"], fits["h2d_pageable"],
                                           spreads["h2d_pinned"], cfg.trials)
        self.measured += copy_measurements("links.d2h", fits["d2h_pinned"], fits["d2h_pageable"],
                                           spreads["d2h_pinned"], cfg.trials)
        self._fits = fits
        self._buffers = (pinned, host_out_pinned, dev)

    def concurrent_copies(self) -> None:
        """H2D while D2H runs (bidir derate) and two H2D streams at once (do two copy engines help?)."""
        torch, cfg = self.torch, self.cfg
        pinned, host_out, dev = self._buffers
        size = min(256 * MiB, cfg.max_size // 2)
        n = 8
        dev_b = torch.empty(size, dtype=torch.uint8, device=self.device)
        dev_b.copy_(dev[:size])
        alone_h2d, alone_d2h, both_h2d, both_d2h, two_single, two_pair = [], [], [], [], [], []
        for trial in range(cfg.trials):
            alone_h2d.append(self.timed_copies(dev[:size], pinned[:size], n, self.side))
            alone_d2h.append(self.timed_copies(host_out[:size], dev_b, n, self.side2))
            h, d = self._two_streams((dev[:size], pinned[:size]), (host_out[:size], dev_b), n)
            both_h2d.append(h)
            both_d2h.append(d)
            a, b = self._two_streams((dev[:size], pinned[:size]), (dev[size:2 * size], pinned[size:2 * size]), n)
            two_single.append(alone_h2d[-1])
            two_pair.append(max(a, b))
            for name, value in (("h2d_alone", alone_h2d[-1]), ("d2h_alone", alone_d2h[-1]), ("h2d_with_d2h", h),
                                ("d2h_with_h2d", d), ("two_h2d_streams_span", max(a, b))):
                self.rows.append({"bench": "concurrent_copy", "direction": name, "memory": "pinned", "bytes": size,
                                  "copies": n, "trial": trial, "seconds": value})
        derate_h2d = Spread.of(np.array(alone_h2d) / np.array(both_h2d))
        derate_d2h = Spread.of(np.array(alone_d2h) / np.array(both_d2h))
        gain = Spread.of(2 * np.array(two_single) / np.array(two_pair))  # aggregate vs one stream
        engines = 2 if gain.median >= 1.25 else 1
        self.report["bidir_derate"] = {"h2d": vars(derate_h2d), "d2h": vars(derate_d2h), "bytes": size,
                                       "definition": "bandwidth while the other direction runs / bandwidth alone"}
        self.report["two_h2d_streams_gain"] = {**vars(gain), "copy_engines": engines,
                                               "definition": "aggregate H2D bandwidth of two streams / one stream"}
        self.measured.append(Measured("links.h2d.copy_engines", engines, "count",
                                      f"two concurrent H2D streams of {format_bytes(size)} copies move "
                                      f"{gain.median:.2f}x one stream's bytes (n={gain.n}; 2 if >= 1.25x)"))

    def _two_streams(self, first: tuple[Any, Any], second: tuple[Any, Any], n: int) -> tuple[float, float]:
        """Per-copy seconds of two copy batches started together on the two side streams."""
        torch = self.torch
        self._gate(self.side)
        self._gate(self.side2)
        spans = []
        for stream, (dst, src) in ((self.side, first), (self.side2, second)):
            with torch.cuda.stream(stream):
                start = self._event(stream)
                for _ in range(n):
                    dst.copy_(src, non_blocking=True)
                spans.append((start, self._event(stream)))
        torch.cuda.synchronize(self.device)
        return tuple(s.elapsed_time(e) * 1e-3 / n for s, e in spans)  # type: ignore[return-value]

    def hbm_bandwidth(self) -> None:
        torch, cfg = self.torch, self.cfg
        free, _ = torch.cuda.mem_get_info(self.device)
        size = int(min(1 * GiB, free // 4))
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        src = torch.randint(0, 256, (size,), dtype=torch.uint8, device=self.device, generator=gen)
        dst = torch.empty_like(src)
        self.timed_copies(dst, src, 1, self.compute, gate=False)
        bws = []
        for trial in range(cfg.trials):
            t = self.timed_copies(dst, src, 5, self.compute)
            bws.append(2 * size / t)
            self.rows.append({"bench": "hbm_copy", "direction": "d2d", "memory": "device", "bytes": size,
                              "copies": 5, "trial": trial, "seconds": t})
        spread = Spread.of(bws)
        self.report["hbm_copy_bandwidth"] = {**vars(spread), "bytes": size, "counts": "read + write bytes"}
        self.measured.append(Measured("compute.memory_bandwidth", round_sig(spread.median), "bandwidth",
                                      f"device-to-device copy of {format_bytes(size)} counting read + write bytes, "
                                      f"{spread_text(spread, 'bandwidth')}"))

    def launch_overhead(self) -> None:
        from moesim.kernels.microkernels import launch_empty

        torch, cfg = self.torch, self.cfg
        n = 2000
        marker = torch.zeros(1, device=self.device)
        launch_empty(marker)
        gpu, host = [], []
        for trial in range(cfg.trials):
            start = self._event(self.compute)
            t0 = time.perf_counter()
            for _ in range(n):
                launch_empty(marker)
            t1 = time.perf_counter()
            end = self._event(self.compute)
            end.synchronize()
            gpu.append(start.elapsed_time(end) * 1e-3 / n)
            host.append((t1 - t0) / n)
            self.rows.append({"bench": "launch", "direction": "", "memory": "", "bytes": 0, "copies": n,
                              "trial": trial, "seconds": gpu[-1]})
        s_gpu, s_host = Spread.of(gpu), Spread.of(host)
        self.host_launch_s = s_host.median
        self.report["launch_overhead"] = {"stream": vars(s_gpu), "host": vars(s_host),
                                          "definition": "empty Triton kernel, 2000 back-to-back launches"}
        self.measured.append(Measured("compute.launch_overhead", round_sig(s_gpu.median), "time",
                                      f"empty Triton kernel, {n} back-to-back launches between events, "
                                      f"{spread_text(s_gpu, 'time')} (host side {format_quantity(s_host.median, 'time', 4)})"))

    def _kernel_setup(self) -> tuple[Any, Any, ExpertShapes]:
        torch, cfg = self.torch, self.cfg
        shapes = cfg.shapes
        n_slots = max(cfg.kernel_active)
        if n_slots > shapes.n_experts:
            raise ValueError(f"kernel grid asks for {n_slots} active experts but the model has {shapes.n_experts}")
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        pool = (torch.randn((n_slots, shapes.elems), generator=gen, device=self.device) * shapes.hidden ** -0.5
                ).to(shapes.torch_dtype())
        slot_of = torch.full((shapes.n_experts,), -1, dtype=torch.int32, device=self.device)
        slot_of[:n_slots] = torch.arange(n_slots, dtype=torch.int32, device=self.device)
        return pool, slot_of, shapes

    def _kernel_inputs(self, tokens_per_expert: int, active: int, shapes: ExpertShapes) -> tuple[Any, Any, Any]:
        torch = self.torch
        n_tokens = tokens_per_expert * active
        ids = torch.arange(active, device=self.device).repeat_interleave(tokens_per_expert)[:, None]
        weights = torch.ones((n_tokens, 1), device=self.device)
        x = torch.randn((n_tokens, shapes.hidden), device=self.device).to(shapes.torch_dtype())
        return x, ids, weights

    def expert_kernel(self) -> None:
        """Time vs token histogram: `active` experts with `tokens` tokens each (top-1 routing sets the histogram)."""
        from moesim.kernels.expert_kernel import default_config, device_smem_limit, grouped_swiglu

        torch, cfg = self.torch, self.cfg
        pool, slot_of, shapes = self._kernel_setup()
        l2 = int(getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0)) or 64 * MiB
        flush = torch.empty(2 * l2, dtype=torch.uint8, device=self.device)
        table, xb, xf, xt = [], [], [], []
        for active in cfg.kernel_active:
            for tokens in cfg.kernel_tokens:
                x, ids, w = self._kernel_inputs(tokens, active, shapes)
                kc = default_config(tokens, device_smem_limit(self.device), pool.element_size())
                run = lambda: grouped_swiglu(x, ids, w, pool, slot_of, shapes.hidden, shapes.inter,  # noqa: E731
                                             config=kc)
                run()  # compile and warm up
                times = []
                for rep in range(cfg.kernel_reps):
                    flush.zero_()
                    start = self._event(self.compute)
                    run()
                    end = self._event(self.compute)
                    end.synchronize()
                    times.append(start.elapsed_time(end) * 1e-3)
                    self.rows.append({"bench": "expert_kernel", "direction": f"active={active}",
                                      "memory": f"tokens_per_expert={tokens}", "bytes": active * shapes.expert_bytes,
                                      "copies": 1, "trial": rep, "seconds": times[-1]})
                s = Spread.of(times)
                flops = 2 * shapes.elems * tokens * active
                table.append({"tokens_per_expert": tokens, "active_experts": active, "weight_bytes":
                              active * shapes.expert_bytes, "flops": flops, **vars(s)})
                xb.append(active * shapes.expert_bytes)
                xf.append(flops)
                xt.append(s.median)
        fit = fit_kernel_times(xb, xf, xt)
        self.report["expert_kernel"] = {
            "shapes": {"hidden": shapes.hidden, "inter": shapes.inter, "dtype": shapes.dtype},
            "routing": "top-1, `active_experts` experts with `tokens_per_expert` tokens each; L2 flushed per rep",
            "timed": "grouped_swiglu as the executor calls it: routing alignment, both Triton launches, top-k sum",
            "fit": fit.to_dict(),
            "points": [{**row, "relative_residual": float(r)} for row, r in zip(table, fit.relative_residuals)],
        }
        self._kernel = (pool, slot_of, shapes)

    def overlap(self) -> None:
        """Kernel and copies alone, then together on two streams: the slowdown of each."""
        from moesim.kernels.expert_kernel import default_config, device_smem_limit, grouped_swiglu

        torch, cfg = self.torch, self.cfg
        pool, slot_of, shapes = self._kernel
        active = min(cfg.top_k, max(cfg.kernel_active))
        x, ids, w = self._kernel_inputs(32, active, shapes)
        kc = default_config(32, device_smem_limit(self.device), pool.element_size())
        pinned, _, dev = self._buffers
        size = min(64 * MiB, cfg.max_size)
        src, dst = pinned[:size], dev[:size]

        def kernels(m: int) -> tuple[Any, Any]:
            start = self._event(self.compute)
            for _ in range(m):
                grouped_swiglu(x, ids, w, pool, slot_of, shapes.hidden, shapes.inter, config=kc)
            return start, self._event(self.compute)

        grouped_swiglu(x, ids, w, pool, slot_of, shapes.hidden, shapes.inter, config=kc)
        self.torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        s, e = kernels(20)
        t_host = (time.perf_counter() - t0) / 20  # enqueue cost per call (routing ops + two launches)
        e.synchronize()
        self._gate(self.compute, 20 * t_host * 1.5 + 2e-3)  # held while enqueueing: GPU time, not host time
        s, e = kernels(20)
        e.synchronize()
        t_kernel = s.elapsed_time(e) * 1e-3 / 20
        t_copy = self.timed_copies(dst, src, 4, self.side)
        m = int(min(2000, max(10, 0.02 / t_kernel)))
        n = int(min(200, max(2, 0.02 / t_copy)))
        hold = m * t_host * 1.5 + 2e-3
        k_alone, c_alone, k_both, c_both = [], [], [], []
        for trial in range(cfg.trials):
            self._gate(self.compute, hold)
            s, e = kernels(m)
            e.synchronize()
            k_alone.append(s.elapsed_time(e) * 1e-3 / m)
            c_alone.append(self.timed_copies(dst, src, n, self.side))
            self._gate(self.compute, hold)
            self._gate(self.side, hold)
            with torch.cuda.stream(self.side):
                cs = self._event(self.side)
                for _ in range(n):
                    dst.copy_(src, non_blocking=True)
                ce = self._event(self.side)
            s, e = kernels(m)
            torch.cuda.synchronize(self.device)
            k_both.append(s.elapsed_time(e) * 1e-3 / m)
            c_both.append(cs.elapsed_time(ce) * 1e-3 / n)
            for name, value in (("kernel_alone", k_alone[-1]), ("copy_alone", c_alone[-1]),
                                ("kernel_with_copy", k_both[-1]), ("copy_with_kernel", c_both[-1])):
                self.rows.append({"bench": "overlap", "direction": name, "memory": "pinned", "bytes": size,
                                  "copies": n, "trial": trial, "seconds": value})
        self.report["overlap_derate"] = {
            "kernel": vars(Spread.of(np.array(k_both) / np.array(k_alone))),
            "copy": vars(Spread.of(np.array(c_both) / np.array(c_alone))),
            "definition": "time while the other runs / time alone (1 = no interference)",
            "kernel_point": {"tokens_per_expert": 32, "active_experts": active, "launches": m},
            "copy_bytes": size, "copies": n,
        }

    def nvml_crosscheck(self) -> None:
        """PCIe bytes NVML saw vs bytes issued, and energy per GB, over a >= 1 s stream of H2D copies."""
        torch, cfg = self.torch, self.cfg
        if not self.telemetry.available:
            self.report["nvml"] = {"available": False, "reason": self.telemetry.reason}
            return
        pinned, _, dev = self._buffers
        size = min(256 * MiB, cfg.max_size)
        per_copy = self._fits["h2d_pinned"].predict(size)
        n = max(4, int(cfg.nvml_window_s / per_copy))
        torch.cuda.synchronize(self.device)
        self.telemetry.interval_s = 0.02  # NVML's PCIe window is 20 ms: sample every window here
        time.sleep(0.1)
        t0 = self.telemetry.clock()
        with torch.cuda.stream(self.side):
            for _ in range(n):
                dev[:size].copy_(pinned[:size], non_blocking=True)
        self.side.synchronize()
        t1 = self.telemetry.clock()
        time.sleep(0.05)
        self.telemetry.interval_s = SAMPLE_INTERVAL_S
        summary = self.telemetry.summary(t0, t1)
        issued = n * size
        entry: dict[str, Any] = {"available": True, "bytes_issued": issued, "window_s": t1 - t0}
        if summary is not None:
            entry.update(summary.to_dict())
            if summary.pcie_rx_bytes is not None:
                entry["pcie_rx_bytes_over_issued"] = summary.pcie_rx_bytes / issued
            if summary.energy_J is not None:
                entry["joules_per_GB_gross"] = summary.energy_J / (issued / 1e9)
                entry["energy_note"] = ("whole-board energy over the window (idle included); NVML's sensor "
                                        "samples ~25% of runtime on A100/H100, so treat as indicative")
        self.report["nvml"] = entry

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
