"""Synthetic routing traces: seeded, vectorised, with the knobs that move cache behaviour.

Why synthetic traces: real traces are short (one prompt, a few hundred tokens) and few; sweeps
need long traces whose concentration, token-to-token reuse and cross-layer correlation can be
set, and a fit (moesim.traces.synth.fit) that makes them look like a real one.

The model, per layer l and token t of a request (tokens in position order, prompt then decode):
  0. popularity: a Zipf law with exponent zipf_l over a seeded permutation of the experts; with
     `request_active` = a_l < 1 each request routes only among its own round(a_l * n_experts)
     experts (drawn without replacement by popularity, so hot experts are nearly always in), the
     law restricted to them: one prompt touches a subset, different prompts different subsets.
     With cross_layer = c > 0 the image (under the Markov map below) of each expert active at
     layer l-1 is kept active at layer l with probability c, so Markov moves stay in the subset;
  1. copies: each of the k slots repeats one of the previous token's experts at layer l with
     probability `reuse` (a uniformly chosen subset, so copies are distinct);
  2. fresh slot j draws an expert: with probability `cross_layer` (layers >= 1) it is
     markov_l[e'], where e' is the token's slot-j expert at layer l-1 and markov_l a seeded random
     bijection that keeps popularity ranks within blocks of `markov_block` (if the request lacks
     that expert, the law's draw stands); otherwise it comes from the request's law at layer l;
  3. fresh draws that repeat an expert already in the row are redrawn (a token's k experts are
     distinct), after which the row's slots are shuffled.
Copies are resolved through a pointer forest (each slot points at the slot it copies; pointer
jumping finds the slot that drew the value), so a layer costs O(tokens * k * log chain) numpy
work and no Python loop over tokens. Passes follow continuous batching: `batch_size` decode
slots; a request joins when a slot frees, its prompt is one prefill pass, and every decode pass
holds one token of each active request.
"""

from __future__ import annotations

import numpy as np

from moesim.traces.stats.arrays import unique_sorted
from moesim.traces.synth.schedule import Schedule, build_schedule, draw_lengths, expand
from moesim.traces.synth.synth_config import PRESETS, LengthDist, SynthConfig, help_table, preset
from moesim.traces.format.trace_meta import TraceMeta, expert_dtype
from moesim.traces.format.trace import Trace

__all__ = ["PRESETS", "LengthDist", "SynthConfig", "generate", "generate_with_lengths", "help_table", "preset"]

_REJECTION_ROUNDS = 4  # plain redraws of conflicting experts before exact complement sampling
_MAX_ROUNDS = 10_000


def check_synth_memory(cfg: SynthConfig, where: str = "--set") -> None:
    """Refuse, before drawing anything, a config whose arrays cannot fit (moesim.limits)."""
    from moesim.limits import BYTES_PER_OBJECT, BYTES_PER_SYNTH_ACCESS, BYTES_PER_SYNTH_REQUEST, check_memory

    per_token = cfg.n_layers * cfg.top_k
    check_memory(cfg.n_layers * cfg.n_experts * BYTES_PER_OBJECT,
                 f"n_layers x n_experts = {cfg.n_layers:,} x {cfg.n_experts:,} experts", where)
    if cfg.accesses > 0:
        check_memory(cfg.accesses * BYTES_PER_SYNTH_ACCESS, f"{cfg.accesses:,} accesses", "--accesses")
        return
    tokens = cfg.n_requests * max(1.0, cfg.prefill.mean() + cfg.decode.mean())
    check_memory(cfg.n_requests * BYTES_PER_SYNTH_REQUEST, f"{cfg.n_requests:,} requests", "--requests")
    check_memory(tokens * per_token * BYTES_PER_SYNTH_ACCESS,
                 f"{cfg.n_requests:,} requests of about {tokens / cfg.n_requests:,.0f} tokens", "--requests")


# ---- routing -----------------------------------------------------------------------------------
def zipf_weights(n_experts: int, exponent: float) -> np.ndarray:
    """Zipf law over popularity ranks: w_i proportional to 1 / (i + 1)^s, summing to 1."""
    weights = np.arange(1, n_experts + 1, dtype=np.float64) ** (-exponent)
    return weights / weights.sum()


def markov_map(rank_order_prev: np.ndarray, rank_order: np.ndarray, block: int,
               rng: np.random.Generator) -> np.ndarray:
    """The transition structure between layers l-1 and l: expert e' of layer l-1 leads to expert
    markov[e'] of layer l. A seeded random bijection that keeps popularity ranks within blocks
    of `block` ranks (0: one block), so a hot expert leads to a hot one (layer l keeps its
    concentration) but *which* hot one is random: information a frequency list lacks and a
    cross-layer predictor can learn.
    `rank_order[i]` is the expert of popularity rank i.
    """
    n = rank_order.size
    block = n if block <= 0 else min(block, n)
    target_rank = np.arange(n, dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        target_rank[start:stop] = start + rng.permutation(stop - start)
    rank_prev = np.empty(n, dtype=np.int64)
    rank_prev[rank_order_prev] = np.arange(n)
    return rank_order[target_rank[rank_prev]]


def request_laws(popularity: np.ndarray, n_active: int, n_requests: int, rng: np.random.Generator,
                 prefer: np.ndarray | None = None) -> np.ndarray:
    """Each request's law over the experts: [1, E] when every expert is active, else [R, E] with
    each row the popularity restricted to that request's n_active experts, drawn without
    replacement in proportion to popularity (Gumbel top-n). Experts marked in `prefer` [R, E]
    are taken first (the cross-layer coupling of active sets)."""
    n = popularity.size
    if n_active >= n:
        return popularity[None, :]
    keys = np.log(np.maximum(popularity, 1e-300))[None, :] + rng.gumbel(size=(n_requests, n))
    if prefer is not None:
        keys += np.where(prefer, 1e6, 0.0)
    active = np.argpartition(-keys, n_active - 1, axis=1)[:, :n_active]
    laws = np.zeros((n_requests, n))
    rows = np.arange(n_requests)[:, None]
    laws[rows, active] = popularity[active]
    return laws


class _LayerRouter:
    """Draws one layer's [n_tokens, k] expert matrix (see the module docstring).

    Draws come from the layer's popularity by inverse CDF (a table of n_experts entries that
    stays in cache); with per-request active sets, a draw the request lacks is redrawn, which
    samples exactly the popularity restricted to the active set (most of the mass is active).
    """

    def __init__(self, k: int, popularity: np.ndarray, laws: np.ndarray, token_request: np.ndarray, reuse: float,
                 cross: float, markov: np.ndarray | None, prev_layer: np.ndarray | None,
                 rng: np.random.Generator) -> None:
        self.k = k
        self.n_experts = popularity.size
        self.laws = laws  # [n_requests or 1, n_experts]
        self.active = laws > 0 if laws.shape[0] > 1 else None
        cdf = np.cumsum(popularity)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        self.cdf = cdf
        self.token_request = token_request
        self.reuse, self.cross, self.markov, self.prev_layer, self.rng = reuse, cross, markov, prev_layer, rng

    def draw(self, slots: np.ndarray) -> np.ndarray:
        """Fresh values for flat slot ids (token * k + slot)."""
        rng, k = self.rng, self.k
        values = np.searchsorted(self.cdf, rng.random(slots.size), side="right").astype(np.int32)
        if self.active is not None:
            req = self.token_request[slots // k]
            todo = np.flatnonzero(~self.active[req, values])
            for _ in range(8):
                if todo.size == 0:
                    break
                values[todo] = np.searchsorted(self.cdf, rng.random(todo.size), side="right")
                todo = todo[~self.active[req[todo], values[todo]]]
            if todo.size:
                values[todo] = self.draw_excluding(slots[todo], ~self.active[req[todo]])
        if self.markov is not None and self.cross > 0:
            follow = np.flatnonzero(rng.random(slots.size) < self.cross)
            if follow.size:
                source = self.prev_layer[slots[follow] // k, slots[follow] % k]  # slot j follows slot j
                target = self.markov[source]
                if self.active is not None:  # a target the request lacks leaves the law's draw in place
                    keep = self.active[self.token_request[slots[follow] // k], target]
                    follow, target = follow[keep], target[keep]
                values[follow] = target
        return values

    def draw_excluding(self, slots: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """Draws from the request's law restricted to experts not in `taken` [n, n_experts]."""
        law = self.laws[self.token_request[slots // self.k]] if self.laws.shape[0] > 1 else self.laws
        weights = law * ~taken
        empty = weights.sum(axis=1) <= 0
        weights[empty] = ~taken[empty]  # nothing left of the law: uniform over what is free
        cum = np.cumsum(weights, axis=1)
        u = self.rng.random(slots.size) * cum[:, -1]
        return np.minimum((cum <= u[:, None]).sum(axis=1), self.n_experts - 1)

    def route(self, prev_token: np.ndarray) -> np.ndarray:
        k, rng = self.k, self.rng
        n = prev_token.size
        flat = np.arange(n * k, dtype=np.int64)
        ptr = flat.copy()
        copy_rows = np.zeros(0, dtype=np.int64)
        if self.reuse > 0:
            m = rng.binomial(k, self.reuse, size=n) * (prev_token >= 0)
            copy_rows = np.flatnonzero(m)
            if copy_rows.size:
                # slot j < m copies the previous token's slot perm[j]: a uniform subset of size m
                perm = np.argsort(rng.random((copy_rows.size, k)), axis=1)
                is_copy = np.arange(k)[None, :] < m[copy_rows, None]
                rows_ptr = np.where(is_copy, prev_token[copy_rows, None] * k + perm, flat.reshape(n, k)[copy_rows])
                ptr.reshape(n, k)[copy_rows] = rows_ptr
                while True:  # pointer jumping: every slot ends pointing at the slot that drew its value
                    nxt = ptr[ptr]
                    if np.array_equal(nxt, ptr):
                        break
                    ptr = nxt
        own = ptr == flat
        values = np.zeros(n * k, dtype=np.int32)
        own_slots = np.flatnonzero(own)
        values[own_slots] = self.draw(own_slots)
        self._make_distinct(values, ptr, own, n)
        out = values[ptr].reshape(n, k)
        if copy_rows.size:  # copies sit in the first slots: shuffle those rows
            shuffle = np.argsort(rng.random((copy_rows.size, k)), axis=1)
            out[copy_rows] = np.take_along_axis(out[copy_rows], shuffle, axis=1)
        return out

    def _make_distinct(self, values: np.ndarray, ptr: np.ndarray, own: np.ndarray, n: int) -> None:
        """Redraw own slots until no row holds an expert twice.

        A conflict in row t between two slots shows up first in the row where the younger of
        their roots was drawn, where that root is own; redrawing it changes every row that
        copies it, so those rows (a contiguous run per root) are rechecked next round. After
        `_REJECTION_ROUNDS` plain redraws, the rest draw from the law restricted to the experts
        their row lacks (exact, O(n_experts) per draw, and few are left by then).
        """
        k = self.k
        rows = np.arange(n, dtype=np.int64)
        root_last = np.arange(n * k, dtype=np.int64) // k  # last row each root reaches
        np.maximum.at(root_last, ptr, np.arange(n * k, dtype=np.int64) // k)
        for round_ in range(_MAX_ROUNDS):
            if rows.size == 0:
                return
            roots = ptr.reshape(n, k)[rows] if rows.size < n else ptr.reshape(n, k)
            vals = values[roots]
            sorted_vals = np.sort(vals, axis=1)
            bad = np.flatnonzero((sorted_vals[:, 1:] == sorted_vals[:, :-1]).any(axis=1))
            if bad.size == 0:
                return
            roots, vals = roots[bad], vals[bad]
            owned = roots == (rows[bad] * k)[:, None] + np.arange(k)[None, :]
            mark = np.zeros(vals.shape, dtype=bool)
            for i in range(1, k):  # slot i repeats an earlier slot j: redraw i if own, else j if own
                for j in range(i):
                    eq = vals[:, i] == vals[:, j]
                    mark[:, i] |= eq & owned[:, i]
                    mark[:, j] |= eq & ~owned[:, i] & owned[:, j]
            redraw = unique_sorted(roots[mark])
            if redraw.size == 0:
                return
            if round_ < _REJECTION_ROUNDS:
                values[redraw] = self.draw(redraw)
            else:
                self._fill_from_complement(values, ptr, redraw)
            starts = redraw // k
            rows = unique_sorted(expand(starts, root_last[redraw] - starts + 1))
        raise AssertionError("distinct-expert sampling did not converge")  # pragma: no cover

    def _fill_from_complement(self, values: np.ndarray, ptr: np.ndarray, redraw: np.ndarray) -> None:
        """Give each root an expert its row does not hold yet. A redrawn root is own in its row
        (root // k); two roots of one row are drawn one after the other so they differ."""
        k = self.k
        pending = redraw
        while pending.size:
            row = pending // k
            first = np.r_[True, row[1:] != row[:-1]]
            pick = pending[first]
            members = ptr[(pick // k)[:, None] * k + np.arange(k)[None, :]]
            others = members != pick[:, None]
            taken = np.zeros((pick.size, self.n_experts), dtype=bool)
            taken[np.repeat(np.arange(pick.size), others.sum(axis=1)), values[members[others]]] = True
            values[pick] = self.draw_excluding(pick, taken)
            pending = pending[~first]


def route_tokens(config: SynthConfig, schedule: Schedule, seed: np.random.SeedSequence) -> np.ndarray:
    """Expert matrix [n_layers, n_tokens, k] in global token order (int16 or int32)."""
    cfg = config
    n_tok = schedule.n_tokens
    seq = schedule.seq_offsets
    starts = seq[:-1]
    n_req = starts.size
    prev_token = np.arange(n_tok, dtype=np.int64) - 1
    prev_token[starts[seq[1:] > starts]] = -1
    token_request = np.repeat(np.arange(n_req, dtype=np.int64), np.diff(seq))
    pop_seed, active_seed, markov_seed, layer_seed = seed.spawn(4)
    pop_rng = np.random.default_rng(pop_seed)
    active_rng = np.random.default_rng(active_seed)
    markov_rng = np.random.default_rng(markov_seed)
    active = cfg.active_per_layer()
    layer_seeds = layer_seed.spawn(cfg.n_layers)
    zipf = cfg.zipf_per_layer()
    out = np.empty((cfg.n_layers, n_tok, cfg.top_k), dtype=expert_dtype(cfg.n_experts))
    prev_layer: np.ndarray | None = None
    prev_order: np.ndarray | None = None
    prev_laws: np.ndarray | None = None
    for layer in range(cfg.n_layers):
        order = pop_rng.permutation(cfg.n_experts)  # order[i] = expert of popularity rank i
        pop = np.empty(cfg.n_experts)
        pop[order] = zipf_weights(cfg.n_experts, float(zipf[layer]))
        markov = None
        prefer = None
        if layer > 0 and cfg.cross_layer > 0:
            markov = markov_map(prev_order, order, cfg.markov_block, markov_rng)
            if prev_laws is not None and prev_laws.shape[0] > 1:
                # a request keeps, with probability cross_layer each, the images of its active experts
                prefer = np.zeros(prev_laws.shape, dtype=bool)
                prefer[:, markov] = (prev_laws > 0) & (active_rng.random(prev_laws.shape) < cfg.cross_layer)
        laws = request_laws(pop, int(active[layer]), n_req, active_rng, prefer)
        router = _LayerRouter(cfg.top_k, pop, laws, token_request, cfg.reuse, cfg.cross_layer, markov, prev_layer,
                              np.random.default_rng(layer_seeds[layer]))
        routed = router.route(prev_token)
        out[layer] = routed
        prev_layer, prev_order, prev_laws = routed, order, laws
    return out


def _gate_weights(n_rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Normalised exponential draws, largest first in each row (slot 0 is the router's top pick)."""
    w = rng.exponential(size=(n_rows, k))
    w /= w.sum(axis=1, keepdims=True)
    return (-np.sort(-w, axis=1)).astype(np.float16).ravel()


def assemble(config: SynthConfig, schedule: Schedule, routing: np.ndarray,
             weight_rng: np.random.Generator | None = None) -> Trace:
    """Lay routed tokens out as passes and cells (every pass has one cell per layer)."""
    cfg = config
    n_layers, k = cfg.n_layers, cfg.top_k
    n_pass = schedule.pass_phase.size
    tok_per_pass = np.diff(schedule.pass_token_offsets)
    cell_layer = np.tile(np.arange(n_layers, dtype=np.int16), n_pass)
    cell_pass = np.repeat(np.arange(n_pass, dtype=np.int64), n_layers)
    cell_tokens = np.repeat(tok_per_pass, n_layers).astype(np.int32)
    cell_offsets = np.zeros(cell_tokens.size + 1, dtype=np.int64)
    np.cumsum(cell_tokens.astype(np.int64) * k, out=cell_offsets[1:])
    row_src = expand(schedule.pass_token_offsets[cell_pass], cell_tokens)
    row_token = schedule.pass_tokens[row_src]
    row_layer = np.repeat(cell_layer.astype(np.int64), cell_tokens)
    n_tok = routing.shape[1]
    expert = routing.reshape(n_layers * n_tok, k)[row_layer * n_tok + row_token].ravel()
    seq = schedule.seq_offsets
    token_req_global = np.repeat(np.arange(seq.size - 1, dtype=np.int32), np.diff(seq))
    token_pos_global = (np.arange(n_tok, dtype=np.int64) - np.repeat(seq[:-1], np.diff(seq))).astype(np.int32)
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=cfg.n_experts,
        top_k=k,
        object_bytes=cfg.bytes_per_layer(),
        model=f"synthetic:{cfg.model}" if cfg.model else "synthetic",
        provenance={"source": "moesim.traces.synth.synthetic", "licence": "generated", "config": cfg.to_dict()},
    )
    weight = None
    if cfg.weights:
        weight = _gate_weights(row_token.size, k, weight_rng or np.random.default_rng(cfg.seed))
    return Trace(
        meta=meta,
        pass_phase=schedule.pass_phase,
        pass_cell_offsets=np.arange(0, n_pass * n_layers + 1, n_layers, dtype=np.int64),
        pass_token_offsets=schedule.pass_token_offsets,
        token_request=token_req_global[schedule.pass_tokens],
        token_position=token_pos_global[schedule.pass_tokens],
        cell_layer=cell_layer,
        cell_offsets=cell_offsets,
        cell_tokens=cell_tokens,
        expert=expert,
        weight=weight,
    )


def generate(config: SynthConfig) -> Trace:
    """A synthetic trace for `config`. Deterministic in the config (seed included).

    O(accesses) numpy work with small constants: 10 M OLMoE-shaped accesses take a few seconds.
    """
    cfg = config.resolved()
    check_synth_memory(cfg)
    length_seed, route_seed, weight_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    pre, dec = draw_lengths(cfg, np.random.default_rng(length_seed))
    schedule = build_schedule(pre, dec, cfg.batch_size)
    routing = route_tokens(cfg, schedule, route_seed)
    return assemble(cfg, schedule, routing, np.random.default_rng(weight_seed))


def generate_with_lengths(config: SynthConfig, prefill_lengths: np.ndarray, decode_lengths: np.ndarray) -> Trace:
    """As `generate`, with explicit per-request lengths (the fit replays a real trace's shape)."""
    cfg = config.resolved()
    _, route_seed, weight_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    schedule = build_schedule(np.asarray(prefill_lengths), np.asarray(decode_lengths), cfg.batch_size)
    routing = route_tokens(cfg, schedule, route_seed)
    return assemble(cfg, schedule, routing, np.random.default_rng(weight_seed))
