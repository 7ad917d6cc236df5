"""`moesim calibrate`'s compute benchmarks: kernel launch overhead, the Triton expert kernel over token
histograms, and copy/compute overlap. Method: moesim/kernels/gpu_benchmarks.py's docstring.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from moesim.kernels.calibrate import MiB, round_sig, spread_text
from moesim.kernels.fitting import Spread, fit_kernel_times
from moesim.kernels.gpu_bench_base import GpuBench
from moesim.kernels.profile_yaml import Measured
from moesim.kernels.shapes import ExpertShapes
from moesim.units import format_quantity


class KernelBenchmarks(GpuBench):
    """Launches and expert kernels; `overlap` needs copy_sweeps' buffers and expert_kernel's pool."""

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
