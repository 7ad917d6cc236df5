"""`moesim calibrate`'s copy benchmarks: copy-size sweeps, concurrent copies, HBM bandwidth, NVML cross-check.

Method: moesim/kernels/gpu_benchmarks.py's docstring.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from moesim.kernels.calibrate import COPY_TARGET_BYTES, GiB, MiB, copy_measurements, round_sig, spread_text
from moesim.kernels.fitting import CopyFit, Spread, fit_copy_sweep
from moesim.kernels.gpu_bench_base import SAMPLE_INTERVAL_S, GpuBench
from moesim.kernels.profile_yaml import Measured
from moesim.units import format_bytes


class CopyBenchmarks(GpuBench):
    """Host-device and device-device copies; `copy_sweeps` runs first and leaves its buffers and fits."""

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
