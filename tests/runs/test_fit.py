"""fit-profile recovers known figures from a run the simulator generated with them (identifiability),
and says which figures a run cannot tell apart."""

from __future__ import annotations

import dataclasses

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
    # the held per-request latency is the true one: each expert is read as three slice requests
    # (engine_map.slice_shares), so a wrong held latency is paid three times a read and moves the bandwidth
    base = profile_figures(setup.profile) | {"memory_bandwidth": 13e9, "peak_flops": 15e9, "ssd_bandwidth": 3.5e9,
                                             "ssd_latency": TRUE["ssd_latency"]}
    return run, model, base


def test_recovers_known_figures_without_noise() -> None:
    run, model, base = _simulated_run(noise=0.0)
    fit = fit_run(run, model, base, free=("memory_bandwidth", "ssd_bandwidth", "mgmt_per_byte"))
    for name in ("memory_bandwidth", "mgmt_per_byte"):
        assert fit.figures[name] == pytest.approx(TRUE[name], rel=2e-3), name
    assert fit.figures["ssd_bandwidth"] == pytest.approx(TRUE["ssd_bandwidth"], rel=2e-3)
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
    value, sigma = fit.fitted["ssd_bandwidth"]
    assert abs(value - TRUE["ssd_bandwidth"]) <= 4 * sigma and sigma < 0.1 * TRUE["ssd_bandwidth"]
    # constant per decode step at one k: these move the run exactly as memory_bandwidth does
    assert set(fit.not_identified) == {"launch_overhead", "token_overhead"}


def test_huber_weights_by_hand() -> None:
    from moesim.runs.fit import huber_weights

    # residuals -1, 0, 1, 2, 100: median 1, absolute deviations 2, 1, 0, 1, 99 -> MAD 1, scale 1.4826;
    # weight min(1, 1.345 x 1.4826 / |r|): 1 for |r| <= 1.994, 0.99704 for 2, 0.0199408 for the spike of 100
    scale, w = huber_weights(np.array([-1.0, 0.0, 1.0, 2.0, 100.0]))
    assert scale == pytest.approx(1.4826)
    np.testing.assert_allclose(w, [1, 1, 1, 1.345 * 1.4826 / 2, 1.345 * 1.4826 / 100])


def test_a_spike_does_not_move_the_robust_fit() -> None:
    # the same noiseless run with three steps' compute inflated 4x (interference): the weight-read rate
    # is recovered as without them; plain least squares would lower it by ~ the spikes' share of the mean
    run, model, base = _simulated_run(noise=0.0)
    spiked = run.steps.copy()
    spiked.loc[[5, 20, 40], "compute_s"] *= 4.0
    run.steps = spiked
    fit = fit_run(run, model, base, free=("memory_bandwidth",))
    assert fit.figures["memory_bandwidth"] == pytest.approx(TRUE["memory_bandwidth"], rel=5e-3)


def test_tied_figure_follows_its_leader() -> None:
    run, model, base = _simulated_run(noise=0.0)
    fit = fit_run(run, model, base, free=("ssd_bandwidth_qd1", "ssd_bandwidth"),
                  ties={"ssd_bandwidth": ("ssd_bandwidth_qd1", 3.0)})
    assert "ssd_bandwidth" not in fit.fitted
    assert fit.figures["ssd_bandwidth"] == pytest.approx(3.0 * fit.figures["ssd_bandwidth_qd1"], rel=1e-12)
    assert any("tied" in n for n in fit.notes)


def test_batched_rate_recovered_from_the_prefill_and_decode_keeps_the_vector_rate() -> None:
    # the run generated with a matrix-matrix rate of 8 GFLOP/s (prefill experts of 2+ tokens: FLOP-bound) and a
    # matrix-vector rate of 60 GFLOP/s (decode: bandwidth-bound at 11 GB/s); the fit starts without a batched
    # figure (0: the profile has none) and from a wrong weight-read rate
    true = TRUE | {"peak_flops": 60e9, "batched_flops": 8e9}
    trace = _trace()
    config = RunConfig(cache_mib=40, lanes=4, overlap=True, top_k=2)
    setup = engine_setup(config, "phone-oneplus-15r")
    model = SimulatorModel(trace, setup.profile, setup.timed)
    t = model.times(true)
    dec = t.decode
    steps = pd.DataFrame({"step": np.arange(1, dec.sum() + 1), "wall_s": t.total[dec], "io_s": t.io_busy[dec],
                          "compute_s": t.compute[dec], "stall_s": t.stall[dec], "mgmt_s": t.mgmt[dec],
                          "read_bytes": np.nan, "hits": np.nan})
    run = MeasuredRun("simulated", "simulated", steps, config.merged(prefill_s=float(t.total[~dec].sum())))
    # the batched rate moves the prefill: a fit that ignored it could not recover it
    assert model.times(true | {"batched_flops": 16e9}).total[~dec].sum() < 0.9 * t.total[~dec].sum()
    base = true | {"memory_bandwidth": 13e9, "batched_flops": 0.0}
    fit = fit_run(run, model, base, free=("memory_bandwidth", "peak_flops", "batched_flops", "mgmt_per_byte"))
    assert fit.figures["batched_flops"] == pytest.approx(8e9, rel=2e-3)
    assert fit.figures["memory_bandwidth"] == pytest.approx(11e9, rel=2e-3)
    assert fit.figures["peak_flops"] == 60e9 and "peak_flops" in fit.derived  # above the bandwidth-bound floor
    assert "batched_flops" in fit.fitted and "peak_flops" not in fit.fitted
    # from a base below the floor, the vector rate is raised to it: decode stays as fitted
    low = fit_run(run, model, base | {"peak_flops": 1e9}, free=("memory_bandwidth", "peak_flops", "batched_flops"))
    assert 1e9 < low.figures["peak_flops"] < 60e9
    assert low.figures["memory_bandwidth"] == pytest.approx(11e9, rel=2e-3)
    # a run without a prefill measurement cannot identify the batched rate
    run.config = dataclasses.replace(run.config, prefill_s=None)
    none = fit_run(run, model, base, free=("memory_bandwidth", "batched_flops"))
    assert "batched_flops" in none.not_identified and none.figures["batched_flops"] == 0.0
