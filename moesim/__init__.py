"""moesim: replay MoE expert-routing traces against hardware profiles and cache/offload policies.

The same policy objects drive the count replay, the simpy timing engine and the real-GPU executor;
only the clock differs.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
