"""Online estimates of which experts a layer will need, learned only from cells already served.

Both estimators count *cells*, not tokens: what a prefetcher must predict is whether an expert is
needed by the next cell at all (a cell's experts are needed together), and counting tokens would
let one long prefill outweigh hundreds of decode steps.

- LayerFrequency: f_l(y) = cells of layer l that used y / cells of layer l.
- MarkovChain: P(y at l+1 | x at l) = (C_l(x, y) + alpha * f_{l+1}(y)) / (C_l(x) + alpha), where
  C_l(x, y) counts consecutive cells (l, then l+1, same pass) with x in the first and y in the second
  and C_l(x) counts the first kind. The smoothing is a Dirichlet-style prior centred on the next
  layer's frequency: a source never seen backs off to the frequency predictor, and `alpha` is how
  many observations the prior weighs. Both are probabilities that y is *needed* (they sum to about
  top-k over y, not to 1).
Multi-token cells (prefill) learn cell-level co-occurrence: every expert of cell l paired with every
expert of cell l+1, because which token went where is not part of what a prefetcher observes.
"""

from __future__ import annotations

import numpy as np

from moesim.errors import UserError

MAX_MARKOV_ENTRIES = 1 << 27
"""Transition-table size limit (int32 entries, 512 MiB): experts, not token-indexed rows."""


def _add_counts(table: np.ndarray, flat_index: np.ndarray) -> None:
    """table.flat[i] += (occurrences of i in flat_index).

    Only the touched entries are written: a full-table bincount per cell made a Markov table of
    48 x 128 x 128 entries cost 0.5 ms per cell (score-budget on a phone trace: 20 s of 21)."""
    if flat_index.size:
        assert table.flags.c_contiguous
        idx, counts = np.unique(flat_index, return_counts=True)
        flat = table.reshape(-1)  # a view of the contiguous table
        flat[idx] += counts.astype(table.dtype)


class LayerFrequency:
    """Per layer, the number of cells seen and, per expert, the number of cells that used it."""

    def __init__(self, n_layers: int, n_experts: int) -> None:
        self.cells = np.zeros(n_layers, dtype=np.int64)
        self.used = np.zeros((n_layers, n_experts), dtype=np.int64)

    def observe(self, layer: int, experts: np.ndarray) -> None:
        """Count one cell of `layer` that used the distinct local expert ids `experts`."""
        self.cells[layer] += 1
        self.used[layer, experts] += 1

    def observe_many(self, cells: list[tuple[int, np.ndarray]]) -> None:
        """Same counts as observe() on each (layer, routed object ids), duplicates counted once per cell."""
        if not cells:
            return
        n = len(cells)
        layers = np.fromiter((c[0] for c in cells), dtype=np.int64, count=n)
        arrays = [np.asarray(c[1], dtype=np.int64).reshape(-1) for c in cells]
        sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n)
        self.observe_arrays(layers, sizes, np.concatenate(arrays))

    def observe_arrays(self, layers: np.ndarray, sizes: np.ndarray, routed: np.ndarray) -> None:
        """observe_many() on cells given as arrays: cell i has layer layers[i] and the next sizes[i]
        object ids of `routed`."""
        n, n_experts = layers.shape[0], self.used.shape[1]
        if n == 0:
            return
        layers = np.asarray(layers, dtype=np.int64)
        cell_of = np.repeat(np.arange(n, dtype=np.int64), sizes)
        local = np.asarray(routed, dtype=np.int64) - layers[cell_of] * n_experts
        keys = np.unique(cell_of * n_experts + local)
        _add_counts(self.cells, layers)
        _add_counts(self.used, layers[keys // n_experts] * n_experts + keys % n_experts)

    def probability(self, layer: int) -> np.ndarray:
        """f_layer(y) for every expert y (zeros before the layer's first cell)."""
        cells = self.cells[layer]
        if cells == 0:
            return np.zeros(self.used.shape[1], dtype=np.float64)
        return self.used[layer] / float(cells)

    def seen(self, layer: int) -> np.ndarray:
        """Mask of the experts of `layer` used at least once so far."""
        return self.used[layer] > 0


class MarkovChain:
    """Cross-layer transition counts learned online; see the module docstring for the estimate.

    observe: O(|x| * |y|) per cell. predict: O(E^2) per step ahead (a dense E x E row block).
    """

    def __init__(self, n_layers: int, n_experts: int, alpha: float) -> None:
        entries = max(n_layers - 1, 0) * n_experts * n_experts
        if entries > MAX_MARKOV_ENTRIES:
            raise UserError(
                f"{n_layers} layers x {n_experts}^2 experts is too large for a cross-layer transition table "
                f"({entries} entries, limit {MAX_MARKOV_ENTRIES}); use a frequency predictor",
                "markov prefetch",
            )
        self.alpha = float(alpha)
        self.n_experts = n_experts
        self.frequency = LayerFrequency(n_layers, n_experts)
        self.pair = np.zeros((max(n_layers - 1, 0), n_experts, n_experts), dtype=np.int32)
        self.source = np.zeros((max(n_layers - 1, 0), n_experts), dtype=np.int64)
        self._last: tuple[int, int, np.ndarray] | None = None

    def observe(self, pass_index: int, layer: int, experts: np.ndarray) -> None:
        """Learn from one served cell; `experts` are its distinct local expert ids."""
        self.frequency.observe(layer, experts)
        last = self._last
        if last is not None and last[0] == pass_index and last[1] == layer - 1 and experts.size:
            prev = last[2]
            # distinct ids on both sides, so fancy-index += counts every pair once (np.ix_ costs more)
            self.pair[layer - 1][prev[:, None], experts] += 1
            self.source[layer - 1, prev] += 1
        self._last = (pass_index, layer, experts)

    def observe_many(self, cells: list[tuple[int, int, np.ndarray]]) -> None:
        """Same counts as observe() on each (pass_index, layer, routed object ids) in order, in one pass.

        Counting is order-free within a cell, so per-cell distinct ids come from one np.unique and
        the consecutive-cell pairs from one cross product; only the link to the last cell carries
        over. A policy that reads the estimate rarely (score-budget) batches its cells this way.
        """
        if not cells:
            return
        n = len(cells)
        passes = np.fromiter((r[0] for r in cells), dtype=np.int64, count=n)
        layers = np.fromiter((r[1] for r in cells), dtype=np.int64, count=n)
        arrays = [np.asarray(r[2], dtype=np.int64).reshape(-1) for r in cells]
        sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n)
        self.observe_arrays(passes, layers, sizes, np.concatenate(arrays))

    def observe_arrays(self, passes: np.ndarray, layers: np.ndarray, sizes: np.ndarray, routed: np.ndarray) -> None:
        """observe_many() on cells given as arrays: cell i is (passes[i], layers[i], the next sizes[i]
        object ids of `routed`)."""
        if len(passes) == 0:
            return
        n_experts = self.n_experts
        passes = np.asarray(passes, dtype=np.int64)
        layers = np.asarray(layers, dtype=np.int64)
        sizes = np.asarray(sizes, dtype=np.int64)
        routed = np.asarray(routed, dtype=np.int64)
        first = 0
        if self._last is not None:  # the carried-over last cell links the batch but is not counted again
            first = 1
            last = self._last
            passes = np.concatenate(([last[0]], passes))
            layers = np.concatenate(([last[1]], layers))
            sizes = np.concatenate(([last[2].size], sizes))
            routed = np.concatenate((last[1] * n_experts + np.asarray(last[2], dtype=np.int64), routed))
        n = passes.shape[0]
        cell_of = np.repeat(np.arange(n, dtype=np.int64), sizes)
        local = routed - layers[cell_of] * n_experts
        keys = np.unique(cell_of * n_experts + local)  # distinct per cell, cells in order
        ucell, uexp = keys // n_experts, keys % n_experts
        count = np.bincount(ucell, minlength=n)
        start = np.concatenate(([0], np.cumsum(count)[:-1]))
        freq = self.frequency
        _add_counts(freq.cells, layers[first:])
        counted = ucell >= first
        _add_counts(freq.used, layers[ucell[counted]] * n_experts + uexp[counted])
        # cell i links to cell i-1: same pass, next layer, and i has experts
        linked = np.zeros(n + 1, dtype=bool)
        linked[1:n] = (passes[1:] == passes[:-1]) & (layers[1:] == layers[:-1] + 1) & (count[1:] > 0)
        ys = np.flatnonzero(linked[ucell])
        reps = count[ucell[ys] - 1]
        ys = np.repeat(ys, reps)
        if ys.size:
            within = np.arange(ys.size, dtype=np.int64) - np.repeat(np.cumsum(reps) - reps, reps)
            xs = start[ucell[ys] - 1] + within
            src_layer = layers[ucell[ys]] - 1
            flat = (src_layer * n_experts + uexp[xs]) * n_experts + uexp[ys]
            _add_counts(self.pair, flat)
        xs = np.flatnonzero(linked[ucell + 1])
        _add_counts(self.source, layers[ucell[xs]] * n_experts + uexp[xs])
        self._last = (int(passes[-1]), int(layers[-1]), uexp[ucell == n - 1])

    def transition_rows(self, layer: int, sources: np.ndarray) -> np.ndarray:
        """P(y at layer+1 | x at layer) for every x in `sources` (rows) and every y (columns)."""
        prior = self.frequency.probability(layer + 1)
        counts = self.pair[layer][sources].astype(np.float64)
        return (counts + self.alpha * prior) / (self.source[layer, sources] + self.alpha)[:, None]

    def predict(self, layer: int, experts: np.ndarray, steps: int) -> list[np.ndarray]:
        """Need-probabilities for layers layer+1 .. layer+steps given the current cell's experts.

        Step one averages the rows of the current experts (each weighs the same); each further
        step uses the previous step's probabilities, normalised, as the mixture over sources.
        """
        out: list[np.ndarray] = []
        weights = np.zeros(self.n_experts, dtype=np.float64)
        if experts.size == 0:
            return out
        weights[experts] = 1.0
        for step in range(steps):
            src_layer = layer + step
            if src_layer + 1 >= self.frequency.cells.shape[0]:
                break
            total = weights.sum()
            if total <= 0:
                break
            sources = np.flatnonzero(weights)
            probs = (weights[sources] / total) @ self.transition_rows(src_layer, sources)
            out.append(probs)
            weights = probs
        return out
