"""Fast checks over consecutive groups of an array (a token's experts, a cell's tokens).

Both the Parquet reader and the importers must find "the same expert twice for one token" in
traces of tens of millions of accesses; sorting inside fixed-size groups is ~20x cheaper than a
global lexsort, so the common fixed-top-k case takes that path.
"""

from __future__ import annotations

import numpy as np


def first_repeat_in_groups(starts: np.ndarray, values: np.ndarray) -> int | None:
    """Index of the first element that repeats an earlier value of its group, or None.

    Groups are consecutive: group g is values[starts[g]:starts[g+1]] (the last runs to the end);
    `starts` ascends and starts at 0. O(n log k) for groups of equal size k, O(n log n) otherwise.
    """
    n = int(values.shape[0])
    if n < 2 or starts.size == 0:
        return None
    lengths = np.diff(np.append(starts, n))
    k = int(lengths[0])
    if k > 0 and (lengths == k).all():
        rows = values.reshape(-1, k)
        ordered = np.sort(rows, axis=1)
        hit = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if not hit.size:
            return None
        g = int(hit[0])
        seen: set[int] = set()
        for j, v in enumerate(rows[g].tolist()):
            if v in seen:
                return g * k + j
            seen.add(v)
        return None  # unreachable: the sorted row had equal neighbours
    group = np.repeat(np.arange(starts.size, dtype=np.int64), lengths)
    span = int(values.max()) - int(values.min()) + 1
    key = group * span + (values.astype(np.int64) - int(values.min()))
    ordered = np.sort(key)
    if not (ordered[1:] == ordered[:-1]).any():
        return None
    order = np.argsort(key, kind="stable")
    later = order[1:][key[order][1:] == key[order][:-1]]
    return int(later.min())
