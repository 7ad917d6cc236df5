"""What every GPU microbenchmark of `moesim calibrate` shares: the device, its streams, CUDA-event timing,
the sleep-kernel gate and the rows, report entries and Measured values the benchmarks append.

The method is in moesim/kernels/gpu_benchmarks.py's docstring; torch is imported when a bench is made.
"""

from __future__ import annotations

from typing import Any

from moesim.kernels.calibrate import MiB, CalibrateConfig
from moesim.kernels.fitting import CopyFit
from moesim.kernels.profile_yaml import Measured

SAMPLE_INTERVAL_S = 0.1  # background clock/energy sampling; light enough not to disturb host timings


class GpuBench:
    """One CUDA device, its streams and the collected results; the timing primitives the benchmarks use."""

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
        # handed from one benchmark to the next (run() orders them): copy_sweeps' buffers and fits,
        # expert_kernel's weight pool
        self._buffers: tuple[Any, Any, Any] = ()
        self._fits: dict[str, CopyFit] = {}
        self._kernel: tuple[Any, Any, Any] = ()

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
