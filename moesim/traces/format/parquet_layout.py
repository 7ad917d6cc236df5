"""The moesim Parquet layout's fixed names and sizes (docs/trace-format.md), shared by the reader
and the writer so neither imports the other."""

from __future__ import annotations

import numpy as np

FORMAT_VERSION = 1
METADATA_KEY = b"moesim"
BASE_COLUMNS = ("pass", "phase", "request", "position", "token", "layer", "expert", "weight")
ANNOTATION_PREFIX = "ann_"
PREDICTION_PREFIX = "pred_"
# Rows per Parquet row group. Part of the byte-for-byte output: changing it changes every file.
ROW_GROUP_SIZE = 1 << 20
INT32_MAX = int(np.iinfo(np.int32).max)
