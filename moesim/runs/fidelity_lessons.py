"""What each row of docs/fidelity.md teaches, written against the table `make fidelity` produced with this
tree's clock (moesim/runs/fidelity.py). Re-read them whenever the numbers move: they are prose, not code.

Engine facts quoted here come from the BigMoeOnEdge engine's documentation (github.com/Helldez/BigMoeOnEdge,
docs/moe-streaming.md and docs/pressure.md, Apache-2.0) and the runs' own files.
"""

from __future__ import annotations

LESSONS = {
    "gemma route-trace": (
        "TPOT +7.4 %: compute +15 ms (148 vs 133), waiting for reads 52 vs 53 ms and bookkeeping 16 vs 15 ms."
        " The wait matches with the engine's own read and compute order (moesim/runs/engine_map.py): a missed"
        " expert is read as its two weight slices (fused gate_up, down), each on a lane of its own, a layer's"
        " slices queued slice-major, and the expert matmul visits the routed experts in id order, each "
        "(slice, expert) waiting for its bytes; gemma's dense MLP runs before the router in llama.cpp's "
        "gemma4 graph, so it hides no read. The compute excess is the split the qwen run cannot make: at one "
        "k on one model its compute residual is the same every step, so a fixed cost per layer (the engine "
        "computes the routing node alone and synchronises before it reads the layer's experts, docs/moe-"
        "streaming.md 'Route'; tracing adds a barrier per MoE layer) is fitted as weight-read rate, and "
        "gemma, with 30 layers to qwen's 48 and 1.5x the bytes per layer, pays it per byte. TTFT -4.0 %: the "
        "prefill is a per-layer barrier (the engine's batched expert matmul runs only once the layer's reads "
        "return: 3.82 s, -43 %, without it) and its matmuls over more than one token run at the processor's "
        "matrix-matrix rate (batched_flops), fitted to qwen's prefill alone (4.24e10 FLOP/s) while decode's "
        "matrix-vector work keeps peak_flops. With one rate for both, the prefill asked for a rate that would"
        " have made decode FLOP-bound, so it was raised to 6.07e10, and qwen's own prefill came out 5.75 s "
        "for its 6.33 s and gemma's 5.57 s (-16 %)"),
    "gemma_stream": (
        "passes, partly by compensation: reads 325 vs 449 ms (at full depth this day's flash gave ~2.1 GB/s; "
        "the curve fitted on qwen, 3 x its one-read rate, gives 3.4) while the bookkeeping term adds 119 ms "
        "that this older build reports inside its compute residual or its read time (it has no mgmt column: "
        "172 ms compute measured vs 163 + 119 predicted)"),
    "gemma_stream_ov": (
        "the same saturated flash, overlapped: stall 248 vs 367 ms, and the same bookkeeping question"),
    "gemma_c2000_l2": (
        "2 lanes, serial: reads 220 vs 256 ms; the older build folds its bookkeeping (48 ms predicted) into "
        "the compute residual: 225 measured vs 163 + 48"),
    "gemma_c2000_l4": (
        "4 lanes, serial: reads 143 vs 221 ms, and the row fails (-20.9 %). Measured, 4 lanes read only 14 % "
        "faster than 2 (256 -> 221 ms): on this day (2026-07-12) the flash saturated by two requests in "
        "flight. The curve comes from the qwen run (2026-07-15), whose reads, split into their three slices, "
        "reach three or four requests in flight and pin the curve's top at 3.37 GB/s (3 x the one-read rate; "
        "fitted free the qwen run asks for 3.64 +- 0.04). While every expert was modelled as one request, "
        "qwen's reads rarely filled the lanes, its fitted top was 2.94 GB/s and this row passed at -13.3 %: a"
        " flash state of one day is no profile figure, and the 2026-07-12 rows carry it"),
    "gemma_auto_ov": (
        "4610 MiB budget, sized at load from MemAvailable, which counts the page cache holding the engine's own "
        "mmapped dense weights as free (docs/pressure.md), so it over-asks: MemAvailable fell to 1.6 GB "
        "(gemma_auto_ov.metrics), the OS reclaimed the dense pages during decode and the engine demand-faulted "
        "them back ('4 KiB at a time'): the compute residual tripled (452 ms vs ~140 in the 2000 MiB replicates). "
        "Whether this happens can be stated from run facts: free memory at the start (the .metrics sidecar's "
        "mem_avail_before_kb; MemAvailable in the route-trace runs' .state) less the cache budget less the dense "
        "weights read every token (the engine's dense warm-up, gemma.log: 1816 MiB, the trace's 1224 MiB of "
        "per-layer weights plus the tied embedding the LM head reads) is 6385 - 4610 - 1816 = -41 MiB here, "
        "-481 MiB with the 440 MiB KV cache (gemma.log), against +819 / +379 MiB for the 4000 MiB route-trace "
        "run (6635 MiB free), +858 MiB for qwen (6007 free, 957 dense, 192 KV) and over +2000 MiB for every "
        "2000 MiB or cache-less run: only this run is short. How long the re-faults take cannot be stated "
        "without fitting to this run, so the row stays failing: the OS re-faults per token somewhere between "
        "the shortfall (41-481 MiB) and the whole 1816 MiB (a scan larger than an LRU page cache), and at "
        "what read size: 4 KiB pages at the profile's 100 us per read (~40 MB/s) would cost 1.1-12.8 s a "
        "token, reads of an expert's size at the fitted 0.98 GB/s 44-515 ms, against ~310 ms measured. The "
        "phone profile has no small-read point on its flash curve and no figure for the share of the shortfall "
        "re-read per token; the only runs that could pin either are this one and gemma_mmap, both held out"),
    "gemma_k6": ("same model, k and budget as the bundled gemma trace but another prompt, 256 steps and no tracing: "
                 "replayed with the bundled routing, so the per-step comparison is only indicative; its parts miss "
                 "like the route-trace row's, less the tracing barrier"),
    "gemma_mmap": ("plain mmap: every expert is a page fault through the OS page cache, 4 KiB at a time; the phone "
                   "profile has no page-cache memory and no small-request point on its flash curve, so it is not "
                   "predicted"),
}
REPLICATE_LESSON = (
    "one of four identical-work runs (LRU 2000 MiB, 4 lanes, overlap, k=8), whose s/token spread 14.5 %. "
    "Predicted 306 ms: -2.8 to -6.8 % for the three later runs, -15.1 % for the slowest, "
    "gemma_c2000_l4_ov, from the slow-flash day of the serial rows (2026-07-12; see gemma_c2000_l4), "
    "which misses its 15 % by 0.1 points. Compute 163 ms predicted against 136-148 measured on the later "
    "builds (the per-layer split, as the route-trace row) and 237 on the older build, whose residual "
    "holds its bookkeeping; waiting for reads 95 vs 123-133 ms; bookkeeping 48 vs 45-48 ms")

QWEN_NOTE = (
    "On the qwen run itself (the one fitted) check-run predicts TPOT -7.9 % (162.8 vs 176.8 ms) and +1.0 "
    "% at the median step (153.3 vs 151.7 ms), a median per-step error of 9.4 %: waiting for reads 50.6 "
    "vs 42.3 ms, compute 92 vs 114 ms (the robust fit follows the median step, 87 ms, not the "
    "interference spikes that lift the mean). Before the engine's read and compute order was modelled "
    "(each expert read as its weight slices on lanes of their own, queued slice-major, and the matmul's "
    "expert-id order: moesim/sim/read_slices.py, from the engine's expert_stream_source.cpp and docs/moe-"
    "streaming.md), every miss was one request on one lane: qwen waited 85.6 ms a token, TPOT +11.9 %, "
    "+26.0 % at the median step, 31.0 % per step. Its read-time column fitted either way (13.3 ms rms "
    "then, 7.6 now), so it was the stall column that told the two apart")

