"""json_ready: what the run summaries (timed replay, GPU executor, validate) pass through before JSON."""

from __future__ import annotations

import json
import math

import numpy as np

from moesim.json_values import json_ready


def test_numpy_scalars_become_python_values_and_non_finite_floats_null() -> None:
    value = {1: np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "nan": float("nan"),
             "inf": np.float64(-math.inf), "nested": (np.int16(2), [np.float64(1.25), None, "x"])}
    ready = json_ready(value)
    assert ready == {"1": 3, "f": 0.5, "b": True, "nan": None, "inf": None, "nested": [2, [1.25, None, "x"]]}
    assert type(ready["1"]) is int and type(ready["f"]) is float and type(ready["b"]) is bool
    assert json.dumps(ready, allow_nan=False) == (
        '{"1": 3, "f": 0.5, "b": true, "nan": null, "inf": null, "nested": [2, [1.25, null, "x"]]}')


def test_python_values_pass_unchanged() -> None:
    value = {"a": [1, 2.5, True, None, "s"]}
    assert json_ready(value) == value
