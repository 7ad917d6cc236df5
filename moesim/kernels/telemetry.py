"""GPU telemetry from NVML in SI units, sampled by a background thread, with a null fallback.

NVML reports PCIe throughput in KB/s averaged over a 20 ms window, the energy counter in mJ since
the driver loaded, power in mW (a 1 s average on Ampere and later), clocks in MHz
(gpu_method.md §6). Samples here are bytes/s, J, W and Hz, stamped with a monotonic clock, so
windows can be lined up with CUDA-event timings after synchronising at window edges.

Where NVML is missing (no `pynvml` module, no driver, no GPU: `nvmlInit` raises
NVMLError_LibraryNotFound on a CPU-only machine) `open_telemetry` returns a `NullTelemetry` that
says why once (a warning on the "moesim.kernels.telemetry" logger) and never fails. A metric the
device does not support (NVMLError_NotSupported, or any other NVMLError) is None in every sample.
No torch import: usable on a core install.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

LOG = logging.getLogger("moesim.kernels.telemetry")

NVML_KB = 1000.0
"""Bytes in NVML's "KB". NVIDIA's docs do not say 1000 or 1024 (a 2.4% difference); calibrate
cross-checks NVML's PCIe bytes against the bytes it copied and reports the ratio."""

_said: set[str] = set()


def _say_once(reason: str) -> None:
    if reason not in _said:
        _said.add(reason)
        LOG.warning("GPU telemetry off: %s", reason)


@dataclass(frozen=True)
class TelemetrySample:
    """One reading of every metric; None where NVML did not answer."""

    t_s: float  # monotonic clock, seconds
    pcie_rx_Bps: float | None  # bytes/s into the GPU (host-to-device), last 20 ms
    pcie_tx_Bps: float | None  # bytes/s out of the GPU
    energy_J: float | None  # cumulative counter since the driver loaded
    power_W: float | None
    sm_clock_Hz: float | None
    mem_clock_Hz: float | None
    clock_event_reasons: int | None  # bitmask (throttle reasons)
    pcie_gen: int | None
    pcie_width: int | None
    pcie_gen_max: int | None
    pcie_width_max: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WindowSummary:
    """What happened between two sample times: energy, PCIe bytes, power, clocks."""

    t0_s: float
    t1_s: float
    n_samples: int
    energy_J: float | None  # counter delta
    mean_power_W: float | None  # energy / duration when the counter answers, else mean of power samples
    pcie_rx_bytes: float | None
    pcie_tx_bytes: float | None
    sm_clock_Hz_min: float | None
    sm_clock_Hz_max: float | None
    mem_clock_Hz_max: float | None
    clock_event_reasons: int | None  # OR of every sample's bitmask

    @property
    def duration_s(self) -> float:
        return self.t1_s - self.t0_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": self.duration_s}


# ---- pure conversions (tested with synthetic samples) ----------------------------------------------
def integrate_rate(times: Sequence[float], rates: Sequence[float | None]) -> float | None:
    """Bytes moved, from throughput readings: sum of rate_i * (t_i - t_{i-1}) for i >= 1.

    A reading at t_i is the average over the window just before t_i, so it stands for the interval
    that ends at t_i (left to right, the first reading only opens the window). With polling slower
    than NVML's 20 ms window this samples the interval rather than covering it: use windows of
    100 ms or more (gpu_method.md §6). None if any reading in the window is missing.
    """
    if len(times) < 2 or any(r is None for r in rates[1:]):
        return None
    total = 0.0
    for i in range(1, len(times)):
        total += float(rates[i]) * (times[i] - times[i - 1])  # type: ignore[arg-type]
    return total


def counter_delta(first: float | None, last: float | None) -> float | None:
    """last - first for a monotonic counter; None if missing or reset (driver reload) in between."""
    if first is None or last is None or last < first:
        return None
    return last - first


def summarize(samples: Sequence[TelemetrySample], t0: float | None = None,
              t1: float | None = None) -> WindowSummary | None:
    """Summary of the samples with t0 <= t <= t1 (whole list by default); None with fewer than two."""
    window = [s for s in samples if (t0 is None or s.t_s >= t0) and (t1 is None or s.t_s <= t1)]
    if len(window) < 2:
        return None
    times = [s.t_s for s in window]
    duration = times[-1] - times[0]
    energy = counter_delta(window[0].energy_J, window[-1].energy_J)
    powers = [s.power_W for s in window if s.power_W is not None]
    if energy is not None and duration > 0:
        mean_power: float | None = energy / duration
    else:
        mean_power = sum(powers) / len(powers) if powers else None
    sm = [s.sm_clock_Hz for s in window if s.sm_clock_Hz is not None]
    mem = [s.mem_clock_Hz for s in window if s.mem_clock_Hz is not None]
    masks = [s.clock_event_reasons for s in window if s.clock_event_reasons is not None]
    reasons = None
    if masks:
        reasons = 0
        for m in masks:
            reasons |= m
    return WindowSummary(
        t0_s=times[0], t1_s=times[-1], n_samples=len(window), energy_J=energy, mean_power_W=mean_power,
        pcie_rx_bytes=integrate_rate(times, [s.pcie_rx_Bps for s in window]),
        pcie_tx_bytes=integrate_rate(times, [s.pcie_tx_Bps for s in window]),
        sm_clock_Hz_min=min(sm) if sm else None, sm_clock_Hz_max=max(sm) if sm else None,
        mem_clock_Hz_max=max(mem) if mem else None, clock_event_reasons=reasons,
    )


# ---- the two implementations -----------------------------------------------------------------------
class Telemetry:
    """Common interface: `sample()`, `start()`/`stop()` a sampler thread, `samples()`, `summary()`."""

    available = False
    reason = ""

    def __init__(self, interval_s: float = 0.02, clock: Callable[[], float] = time.monotonic,
                 capacity: int = 1 << 17) -> None:
        self.interval_s = float(interval_s)
        self.clock = clock
        self._samples: collections.deque[TelemetrySample] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> TelemetrySample | None:
        """One reading now, not stored; None when there is nothing to read."""
        return None

    def sample(self) -> TelemetrySample | None:
        """Read now and append to the buffer."""
        s = self.read()
        if s is not None:
            with self._lock:
                self._samples.append(s)
        return s

    def samples(self) -> list[TelemetrySample]:
        with self._lock:
            return list(self._samples)

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def summary(self, t0: float | None = None, t1: float | None = None) -> WindowSummary | None:
        return summarize(self.samples(), t0, t1)

    def device_info(self) -> dict[str, Any]:
        return {"telemetry": "none", "reason": self.reason}

    def start(self) -> None:
        """Sample every `interval_s` on a daemon thread (plus once now)."""
        if not self.available or self._thread is not None:
            return
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="moesim-nvml-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        """Stop the thread and take a last sample, so the window's end is covered."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "Telemetry":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullTelemetry(Telemetry):
    """No GPU telemetry here: every call works and returns nothing."""

    def __init__(self, reason: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        _say_once(reason)


class NvmlTelemetry(Telemetry):
    """NVML readings of one device; `nvml` is the pynvml module (a fake one in tests)."""

    available = True

    def __init__(self, nvml: Any, device_index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nvml = nvml
        self.device_index = int(device_index)
        self.handle = nvml.nvmlDeviceGetHandleByIndex(self.device_index)
        self._unsupported: set[str] = set()
        self._closed = False
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        self._reasons_fn = reasons
        atexit.register(self._shutdown)

    def _get(self, name: str, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """fn(handle, *args), or None if NVML cannot answer (remembered, so it is not asked again)."""
        if fn is None or name in self._unsupported:
            return None
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as exc:
            self._unsupported.add(name)
            LOG.info("NVML metric %s unavailable: %s", name, exc)
            return None

    def read(self) -> TelemetrySample:
        n = self.nvml
        get = self._get
        rx = get("pcie_rx", n.nvmlDeviceGetPcieThroughput, n.NVML_PCIE_UTIL_RX_BYTES)
        tx = get("pcie_tx", n.nvmlDeviceGetPcieThroughput, n.NVML_PCIE_UTIL_TX_BYTES)
        energy = get("energy", getattr(n, "nvmlDeviceGetTotalEnergyConsumption", None))
        power = get("power", getattr(n, "nvmlDeviceGetPowerUsage", None))
        sm = get("sm_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)
        mem = get("mem_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_MEM)
        return TelemetrySample(
            t_s=self.clock(),
            pcie_rx_Bps=None if rx is None else rx * NVML_KB,
            pcie_tx_Bps=None if tx is None else tx * NVML_KB,
            energy_J=None if energy is None else energy * 1e-3,
            power_W=None if power is None else power * 1e-3,
            sm_clock_Hz=None if sm is None else sm * 1e6,
            mem_clock_Hz=None if mem is None else mem * 1e6,
            clock_event_reasons=get("clock_event_reasons", self._reasons_fn),
            pcie_gen=get("pcie_gen", getattr(n, "nvmlDeviceGetCurrPcieLinkGeneration", None)),
            pcie_width=get("pcie_width", getattr(n, "nvmlDeviceGetCurrPcieLinkWidth", None)),
            pcie_gen_max=get("pcie_gen_max", getattr(n, "nvmlDeviceGetMaxPcieLinkGeneration", None)),
            pcie_width_max=get("pcie_width_max", getattr(n, "nvmlDeviceGetMaxPcieLinkWidth", None)),
        )

    def device_info(self) -> dict[str, Any]:
        name = self._get("name", getattr(self.nvml, "nvmlDeviceGetName", None))
        try:
            driver = self.nvml.nvmlSystemGetDriverVersion()
        except self.nvml.NVMLError:
            driver = None
        return {"telemetry": "nvml", "device_index": self.device_index, "name": _text(name),
                "driver": _text(driver)}

    def _shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass

    def close(self) -> None:
        self.stop()
        self._shutdown()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def open_telemetry(device_index: int = 0, interval_s: float = 0.02,
                   clock: Callable[[], float] = time.monotonic) -> Telemetry:
    """NVML telemetry for one device, or a NullTelemetry (saying why, once) where NVML is missing."""
    try:
        import pynvml
    except ImportError:
        return NullTelemetry("pynvml is not installed (pip install nvidia-ml-py)", interval_s=interval_s, clock=clock)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NullTelemetry(f"NVML unavailable ({type(exc).__name__}: {exc})", interval_s=interval_s, clock=clock)
    try:
        return NvmlTelemetry(pynvml, device_index, interval_s=interval_s, clock=clock)
    except pynvml.NVMLError as exc:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
        return NullTelemetry(f"NVML has no device {device_index} ({exc})", interval_s=interval_s, clock=clock)
