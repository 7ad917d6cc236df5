#!/usr/bin/env bash
# The GPU check for a CUDA host: the kernel and GPU tests with real Triton, CUDA torch and NVML
# (make test-gpu). GPU_PY=python3 uses an environment that already has CUDA torch (a machine
# without network), else make builds one with the gpu extra.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
make test-gpu ${GPU_PY:+GPU_PY="$GPU_PY"}
