"""NVML telemetry: unit conversions, counter deltas and PCIe byte integration through a fake pynvml,
and the null fallback where NVML is missing (as on this CPU-only CI machine)."""

from __future__ import annotations

import logging
import sys
import time
import types

import pytest

from moesim.kernels import telemetry as tm
from moesim.kernels.telemetry import NullTelemetry, NvmlTelemetry, TelemetrySample, integrate_rate, open_telemetry


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def fake_nvml(clock: FakeClock, init_error: str | None = None, unsupported: tuple[str, ...] = ()) -> types.ModuleType:
    """A pynvml stand-in whose counters follow `clock`: 2 GB/s in, 0.5 GB/s out (as KB/s), 300 W."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    m.NVMLError, m.NVMLError_LibraryNotFound, m.NVMLError_NotSupported = (
        NVMLError, NVMLError_LibraryNotFound, NVMLError_NotSupported)
    m.NVML_PCIE_UTIL_TX_BYTES, m.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 1, 2
    m.calls = {"init": 0, "shutdown": 0, "energy": 0}

    def maybe(name):
        if name in unsupported:
            raise NVMLError_NotSupported("Not Supported")

    def init():
        m.calls["init"] += 1
        if init_error:
            raise NVMLError_LibraryNotFound(init_error)

    def shutdown():
        m.calls["shutdown"] += 1

    def throughput(handle, counter):
        maybe("pcie")
        return 2_000_000 if counter == m.NVML_PCIE_UTIL_RX_BYTES else 500_000  # KB/s

    def energy(handle):
        maybe("energy")
        m.calls["energy"] += 1
        return round(5_000_000 + 300_000 * (clock.t - 100.0))  # mJ: 300 W since t=100

    def clock_info(handle, kind):
        return 1980 if kind == m.NVML_CLOCK_SM else 2619  # MHz

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    m.nvmlDeviceGetPcieThroughput = throughput
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = lambda h: 299_500  # mW
    m.nvmlDeviceGetClockInfo = clock_info
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x4
    m.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: 5
    m.nvmlDeviceGetCurrPcieLinkWidth = lambda h: 16
    m.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 5
    m.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlSystemGetDriverVersion = lambda: "580.65"
    return m


@pytest.fixture
def clock():
    return FakeClock()


def test_samples_are_in_si_units(monkeypatch, clock):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(clock))
    tel = open_telemetry(clock=clock)
    assert isinstance(tel, NvmlTelemetry) and tel.available
    s = tel.read()
    assert s.pcie_rx_Bps == 2e9 and s.pcie_tx_Bps == 5e8  # KB/s x 1000
    assert s.energy_J == 5000.0 and s.power_W == 299.5
    assert s.sm_clock_Hz == 1.98e9 and s.mem_clock_Hz == 2.619e9
    assert (s.pcie_gen, s.pcie_width, s.pcie_gen_max, s.pcie_width_max) == (5, 16, 5, 16)
    assert s.clock_event_reasons == 4
    assert tel.device_info() == {"telemetry": "nvml", "device_index": 0, "name": "NVIDIA H100 80GB HBM3",
                                 "driver": "580.65"}
    tel.close()


def test_window_energy_is_a_counter_delta_and_pcie_bytes_integrate_over_time(monkeypatch, clock):
    nvml = fake_nvml(clock)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    tel = open_telemetry(clock=clock)
    for dt in (0.0, 0.02, 0.05, 0.5, 0.03):  # irregular polling, 0.6 s in all
        clock.t += dt
        tel.sample()
    summary = tel.summary()
    assert summary.n_samples == 5 and summary.duration_s == pytest.approx(0.6)
    assert summary.energy_J == pytest.approx(180.0)  # 300 W x 0.6 s, from the mJ counter
    assert summary.mean_power_W == pytest.approx(300.0)
    assert summary.pcie_rx_bytes == pytest.approx(1.2e9)  # 2 GB/s x 0.6 s
    assert summary.pcie_tx_bytes == pytest.approx(0.3e9)
    assert summary.sm_clock_Hz_max == 1.98e9 and summary.clock_event_reasons == 4
    part = tel.summary(t0=100.07, t1=100.57)  # the 0.5 s interval alone
    assert part.n_samples == 2 and part.energy_J == pytest.approx(150.0)
    tel.close()
    assert nvml.calls["shutdown"] == 1


def test_integration_by_hand():
    # readings stand for the interval that ends at them: 10*1 + 30*2 (the first reading opens the window)
    assert integrate_rate([0.0, 1.0, 3.0], [99.0, 10.0, 30.0]) == 70.0
    assert integrate_rate([0.0], [5.0]) is None
    assert integrate_rate([0.0, 1.0], [5.0, None]) is None
    assert tm.counter_delta(10.0, 4.0) is None  # a counter reset is not negative energy


def test_unsupported_metric_is_none_and_not_asked_again(monkeypatch, clock):
    nvml = fake_nvml(clock, unsupported=("energy",))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    tel = open_telemetry(clock=clock)
    a = tel.sample()
    clock.t += 1.0
    b = tel.sample()
    assert a.energy_J is None and b.pcie_rx_Bps == 2e9
    summary = tel.summary()
    assert summary.energy_J is None and summary.mean_power_W == pytest.approx(299.5)  # falls back to power samples
    tel.close()


def test_missing_library_gives_null_telemetry_that_says_so_once(monkeypatch, clock, caplog):
    monkeypatch.setattr(tm, "_said", set())
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(clock, init_error="NVML Shared Library Not Found"))
    with caplog.at_level(logging.WARNING, logger="moesim.kernels.telemetry"):
        first = open_telemetry(clock=clock)
        second = open_telemetry(clock=clock)
    assert isinstance(first, NullTelemetry) and isinstance(second, NullTelemetry)
    assert "NVML Shared Library Not Found" in first.reason
    assert len([r for r in caplog.records if "telemetry off" in r.getMessage()]) == 1
    with first:  # start/stop and summaries are harmless no-ops
        assert first.sample() is None
    assert first.samples() == [] and first.summary() is None


def test_missing_module_gives_null_telemetry(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    tel = open_telemetry()
    assert isinstance(tel, NullTelemetry) and "nvidia-ml-py" in tel.reason


def test_real_pynvml_gives_nvml_telemetry_on_a_gpu_and_null_without_one():
    """Runs in both configurations (nvidia-ml-py is in the dev and gpu extras): `make test` on a
    CPU host checks the fallback, `make test-gpu` on a CUDA host reads one real sample."""
    import pynvml  # noqa: F401 - nvidia-ml-py must be installed: this test must not skip
    import torch

    tel = open_telemetry()
    if not torch.cuda.is_available():
        assert isinstance(tel, NullTelemetry) and tel.reason
        return
    assert isinstance(tel, NvmlTelemetry), getattr(tel, "reason", "")
    sample = tel.sample()
    assert sample is not None and sample.t_s >= 0 and sample.power_W is not None and sample.power_W > 0


def test_sampler_thread_collects_timestamped_samples(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(FakeClock()))
    tel = open_telemetry(interval_s=0.005)  # the real monotonic clock
    with tel:
        time.sleep(0.06)
    samples = tel.samples()
    assert len(samples) >= 4
    assert all(b.t_s > a.t_s for a, b in zip(samples, samples[1:]))
    assert isinstance(samples[0], TelemetrySample)
