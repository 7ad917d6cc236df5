"""The real-GPU side: expert kernel, host store, slot pool, copies, telemetry, calibrate.

Modules that need torch or triton (expert_kernel, microkernels, host_store, slot_pool, streams,
compute, gpu_benchmarks, reference) are imported only by GPU paths and tests; shapes, weights,
telemetry, fitting, profile_yaml, calibrate, device and cli_gpu import on a core install.
This package imports nothing itself.
"""
