"""moesim: replay MoE expert-routing traces against hardware profiles and cache/offload policies.

The same policy objects drive the count replay, the simpy timing engine and the real-GPU executor;
only the clock differs. The Python API (moesim.replay, moesim.sweep, moesim.load_results,
moesim.report) is imported on first use, so `import moesim` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("replay", "sweep", "load_results", "report")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from moesim import api

        return getattr(api, name)
    raise AttributeError(f"module 'moesim' has no attribute {name!r}")
