"""Model-shaped random expert weights: seeded, no downloads, independent per object.

Each object's values come from its own numpy Generator seeded with (seed, object id), so an
object's weights do not depend on which other objects were made or in what order: a validation run
on a subset of layers sees the same experts as a full one. Values are N(0, 1/fan_in) so a SwiGLU
layer keeps activations O(1) in fp16/bf16 (zeros would flatter the timings: gpu_method.md §1).
"""

from __future__ import annotations

import numpy as np

from moesim.kernels.shapes import ExpertShapes


def expert_weights_f32(shapes: ExpertShapes, obj: int, seed: int = 0) -> np.ndarray:
    """The packed expert `obj` (gate | up | down, "x @ W" layout) as a float32 vector of shapes.elems."""
    if not 0 <= obj < shapes.n_objects:
        raise ValueError(f"object {obj} is outside 0..{shapes.n_objects - 1}")
    rng = np.random.default_rng([int(seed), int(obj)])
    out = rng.standard_normal(shapes.elems, dtype=np.float32)
    n = shapes.matrix_elems
    out[: 2 * n] *= np.float32(1.0 / np.sqrt(shapes.hidden))
    out[2 * n :] *= np.float32(1.0 / np.sqrt(shapes.inter))
    return out


def random_activations(n_tokens: int, hidden: int, seed: int = 0) -> np.ndarray:
    """Token activations [n_tokens, hidden], float32, N(0, 1)."""
    return np.random.default_rng([int(seed), 1 << 30]).standard_normal((n_tokens, hidden), dtype=np.float32)
