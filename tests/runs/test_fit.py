"""fit-profile recovers known figures from a run the simulator generated with them (identifiability),
and says which figures a run cannot tell apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moesim.runs.engine_map import engine_setup
from moesim.runs.fit import fit_run
from moesim.runs.measured import MeasuredRun, RunConfig
from moesim.runs.step_model import SimulatorModel, apply_figures, profile_figures
from moesim.sim.timed_replay import timed_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace

TRUE = {"memory_bandwidth": 11e9, "peak_flops": 15e9, "launch_overhead": 0.0, "ssd_bandwidth": 2.6e9,
        "ssd_bandwidth_qd1": 0.788e9, "ssd_latency": 4e-4, "token_overhead": 0.0, "mgmt_per_byte": 1.1e-10}


def _trace():
    """8 layers x 32 experts, top-2, an 8-token prompt and 60 decode steps; experts of two sizes. Decode reads
    weights (bandwidth-bound at these figures); the prefill is FLOP-bound."""
    rng = np.random.default_rng(5)
    prompt = 256  # long enough that each prefill expert serves ~16 tokens: FLOP-bound
    passes = [[[int(e) for _ in range(prompt // 8) for e in rng.choice(32, 2, replace=False)] + [] for _ in range(8)]]
    passes += [[list(rng.choice(32, 2, replace=False)) for _ in range(8)] for _ in range(60)]
    sizes = [3_593_216 if layer % 2 else 4_336_640 for layer in range(8)]
    return simple_trace(passes, 8, 32, sizes, top_k=2, phases=[PREFILL] + [DECODE] * 60)


def _simulated_run(noise: float, seed: int = 0):
    trace = _trace()
    config = RunConfig(cache_mib=40, lanes=4, overlap=True, top_k=2)
    setup = engine_setup(config, "phone-oneplus-15r")
    model = SimulatorModel(trace, setup.profile, setup.timed)
    t = model.times(TRUE)
    rng = np.random.default_rng(seed)
    jitter = lambda x: x * (1 + noise * rng.standard_normal(x.size))  # noqa: E731
    dec = t.decode
    steps = pd.DataFrame({"step": np.arange(1, dec.sum() + 1), "wall_s": t.total[dec], "io_s": jitter(t.io_busy[dec]),
                          "compute_s": jitter(t.compute[dec]), "stall_s": t.stall[dec], "mgmt_s": jitter(t.mgmt[dec]),
                          "read_bytes": np.nan, "hits": np.nan})
    run = MeasuredRun("simulated", "simulated", steps, config.merged(prefill_s=float(t.total[~dec].sum())))
    base = profile_figures(setup.profile) | {"memory_bandwidth": 13e9, "peak_flops": 15e9, "ssd_bandwidth": 3.5e9,
                                             "ssd_latency": 1e-4}
    return run, model, base


def test_recovers_known_figures_without_noise() -> None:
    run, model, base = _simulated_run(noise=0.0)
    fit = fit_run(run, model, base, free=("memory_bandwidth", "ssd_bandwidth", "mgmt_per_byte"))
    for name in ("memory_bandwidth", "mgmt_per_byte"):
        assert fit.figures[name] == pytest.approx(TRUE[name], rel=2e-3), name
    # the shared-bandwidth clock makes io time step-wise in the bandwidth: close, not exact
    assert fit.figures["ssd_bandwidth"] == pytest.approx(TRUE["ssd_bandwidth"], rel=0.1)
    # the prefill rate from the prefill time, the decode figures known
    only_peak = fit_run(run, model, TRUE | {"peak_flops": 12e9}, free=("peak_flops",))
    assert only_peak.figures["peak_flops"] == pytest.approx(TRUE["peak_flops"], rel=2e-3)


def test_with_noise_within_uncertainty_and_collinear_figures_named() -> None:
    run, model, base = _simulated_run(noise=0.03, seed=7)
    fit = fit_run(run, model, base, free=("memory_bandwidth", "ssd_bandwidth", "mgmt_per_byte", "launch_overhead",
                                          "token_overhead"))
    for name in ("memory_bandwidth", "mgmt_per_byte"):
        value, sigma = fit.fitted[name]
        assert abs(value - TRUE[name]) <= 4 * sigma, (name, value, sigma)
        assert sigma < 0.1 * TRUE[name], name
    # the shared-bandwidth clock makes io time step-wise in the bandwidth: close, not within its local sigma
    assert fit.fitted["ssd_bandwidth"][0] == pytest.approx(TRUE["ssd_bandwidth"], rel=0.1)
    # constant per decode step at one k: these move the run exactly as memory_bandwidth does
    assert set(fit.not_identified) == {"launch_overhead", "token_overhead"}
