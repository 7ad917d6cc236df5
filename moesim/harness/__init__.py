"""The independent reference harness: a plain PyTorch MoE decoder whose expert offload (an expert
file or pinned host copy, an LRU of slots, fetches) is written without moesim's planner, cache core
or policies. It records the routing it produced as a moesim trace and its own per-step times;
moesim.harness.predict asks the simulator to predict that run from the trace and a calibrated
profile. Imports torch."""
