/*
 * The eviction policies' hooks (EvictionPolicy's verbs) in C, one case per compiled policy, and
 * the export of their final state. Included by replay.c (it needs kern_t and the list, heap and
 * bucket structures defined there).
 *
 * Each case mirrors the Python policy named in POLICY_NAMES step for step (the module that
 * declares the compiled form, moesim/policies/eviction/); the Python side finds the code by
 * that name (moesim_policy_code), so a policy's compiled form needs no Python list of codes.
 * Lists: queue q of partition p is Q(p, q); ARC uses four (T1, T2, B1, B2), SLRU two
 * (probation, protected), Least-Stale two (stale, current), the others one.
 */

#define Q(p, q) (4 * (p) + (q))

/* the names the policies' compiled forms give (moesim.policies.compiled.CompiledForm.kernel) */
static const char *const POLICY_NAMES[POL_END] = {
    "lru", "fifo", "least-stale", "lfu", "belady", NULL /* lfu on buckets: chosen by the kernel */,
    "slru", "arc", "lru-ds", "moe-infinity", "random",
};

int64_t moesim_policy_code(const char *name) {
    for (int64_t i = 0; i < POL_END; i++)
        if (POLICY_NAMES[i] && strcmp(POLICY_NAMES[i], name) == 0) return i;
    return -1;
}

static inline int64_t layer_of(const kern_t *k, int64_t obj) { return obj / k->r->n_experts; }

/* the heap an object's entry lives in: its partition's, or (moe-infinity) its layer's */
static inline int64_t group_of(const kern_t *k, int64_t p, int64_t obj) {
    return k->pol == POL_MOE_INFINITY ? layer_of(k, obj) : p;
}

/* heaps of partition p: [first, first + n) */
static inline void groups_of(const kern_t *k, int64_t p, int64_t *first, int64_t *n) {
    if (k->pol != POL_MOE_INFINITY) {
        *first = p;
        *n = 1;
    } else if (k->r->n_partitions == 1) {
        *first = 0;
        *n = k->n_layers;
    } else {  /* per-layer scope: partition p holds layer p */
        *first = p;
        *n = 1;
    }
}

/* ---- lists with byte and length counts (SLRU's segments, ARC's four lists) ------------ */
static inline void seg_push(kern_t *k, int64_t p, int q, int32_t obj) {
    list_push(k, Q(p, q), obj);
    k->where[obj] = (int8_t)q;
    k->llen[Q(p, q)]++;
    k->lbytes[Q(p, q)] += k->r->object_bytes[obj];
}

static inline void seg_unlink(kern_t *k, int64_t p, int32_t obj) {
    int q = k->where[obj];
    list_unlink(k, Q(p, q), obj);
    k->where[obj] = -1;
    k->llen[Q(p, q)]--;
    k->lbytes[Q(p, q)] -= k->r->object_bytes[obj];
}

/* ---- SLRU (slru.py) ------------------------------------------------------------------- */
enum { PROBATION = 0, PROTECTED = 1 };

static void slru_access(kern_t *k, int64_t p, int32_t obj) {
    int was_protected = k->where[obj] == PROTECTED;
    seg_unlink(k, p, obj);
    seg_push(k, p, PROTECTED, obj);
    if (was_protected) return;
    double limit = k->r->param[0] * (double)k->r->capacity[p];
    while ((double)k->lbytes[Q(p, PROTECTED)] > limit && k->llen[Q(p, PROTECTED)] > 1) {
        int32_t demoted = k->head[Q(p, PROTECTED)];
        seg_unlink(k, p, demoted);
        seg_push(k, p, PROBATION, demoted);
    }
}

/* ---- ARC (arc.py) ----------------------------------------------------------------------- */
enum { T1 = 0, T2 = 1, B1 = 2, B2 = 3 };

static void arc_adapt(kern_t *k, int64_t p, int32_t obj) {
    double size = (double)k->r->object_bytes[obj];
    if (k->where[obj] == B1) {
        double ratio = (double)k->llen[Q(p, B2)] / (double)k->llen[Q(p, B1)];
        if (1.0 > ratio) ratio = 1.0;
        double x = k->arc_p[p] + ratio * size, c = (double)k->r->capacity[p];
        k->arc_p[p] = x < c ? x : c;  /* Python's min(c, x) */
    } else if (k->where[obj] == B2) {
        double ratio = (double)k->llen[Q(p, B1)] / (double)k->llen[Q(p, B2)];
        if (1.0 > ratio) ratio = 1.0;
        double x = k->arc_p[p] - ratio * size;
        k->arc_p[p] = x > 0.0 ? x : 0.0;  /* Python's max(0.0, x) */
    }
    k->adapted[p] = obj;
}

static void arc_trim(kern_t *k, int64_t p) {
    int64_t c = k->r->capacity[p];
    while (k->llen[Q(p, B1)] && k->lbytes[Q(p, T1)] + k->lbytes[Q(p, B1)] > c)
        seg_unlink(k, p, k->head[Q(p, B1)]);
    while (k->llen[Q(p, B2)] && k->lbytes[Q(p, T1)] + k->lbytes[Q(p, T2)] + k->lbytes[Q(p, B1)]
                                        + k->lbytes[Q(p, B2)] > 2 * c)
        seg_unlink(k, p, k->head[Q(p, B2)]);
}

static void arc_insert(kern_t *k, int64_t p, int32_t obj) {
    if (k->adapted[p] != obj) arc_adapt(k, p, obj);
    k->adapted[p] = -1;
    k->pending[p] = -1;
    int ghost = k->where[obj] == B1 || k->where[obj] == B2;
    if (ghost) seg_unlink(k, p, obj);
    seg_push(k, p, ghost ? T2 : T1, obj);
    arc_trim(k, p);
}

static int64_t arc_victim(kern_t *k, int64_t p) {
    double t1_bytes = (double)k->lbytes[Q(p, T1)];
    int64_t pend = k->pending[p];
    int from_t1 = k->llen[Q(p, T1)] > 0
                  && (t1_bytes > k->arc_p[p] || (pend >= 0 && k->where[pend] == B2 && t1_bytes == k->arc_p[p]));
    int first = from_t1 ? T1 : T2;
    int64_t v = list_first_eligible(k, Q(p, first));
    return v >= 0 ? v : list_first_eligible(k, Q(p, first == T1 ? T2 : T1));
}

/* ---- LRU sparing the next layers (lru_ds.py): one LRU list, stamps per touch ------------ */
static inline void lruds_touch(kern_t *k, int64_t p, int32_t obj, int present) {
    if (present) list_unlink(k, Q(p, 0), obj);
    list_push(k, Q(p, 0), obj);
    k->stamp[obj] = ++k->r->clock[p];
}

/* the oldest eligible object outside the protected layers, else the oldest eligible one */
static int64_t lruds_victim(kern_t *k, int64_t p) {
    int64_t L = k->n_layers, protect = (int64_t)k->r->param[0], fallback = -1;
    for (int32_t o = k->head[Q(p, 0)]; o >= 0; o = k->next[o]) {
        if (k->guard[o] == k->unit_id) continue;
        int64_t d = ((layer_of(k, o) - k->current[p]) % L + L) % L;
        if (!(d > 0 && d <= protect)) return o;
        if (fallback < 0) fallback = o;
    }
    return fallback;
}

/* ---- MoE-Infinity priority (moe_infinity.py): a heap per layer, count x proximity -------- */
static void moe_touch(kern_t *k, int64_t p, int32_t obj, int demand) {
    double count = k->has_count[obj] ? k->count[obj] : 0.0;
    if (demand) {
        count += k->unit;
        k->count[obj] = count;
        k->has_count[obj] = 1;
        k->current[p] = layer_of(k, obj);
    }
    heap_set(k, layer_of(k, obj), obj, count, ++k->r->clock[p]);
}

static int64_t moe_victim(kern_t *k, int64_t p) {
    int64_t first, n, best = -1, L = k->n_layers;
    double best_key = 0.0;
    groups_of(k, p, &first, &n);
    for (int64_t g = first; g < first + n; g++) {
        if (k->hsize[g] == 0) continue;
        int64_t v = heap_first_eligible(k, g);
        if (v < 0) continue;
        int64_t d = ((g - k->current[p] - 1) % L + L) % L;
        double key = k->key[v] * (1.0 - (double)d / (double)L);
        if (best < 0 || key < best_key || (key == best_key && (k->stamp[v] < k->stamp[best]
                                                               || (k->stamp[v] == k->stamp[best] && v < best)))) {
            best = v;
            best_key = key;
        }
    }
    return best;
}

/* ---- Random (random_eviction.py): numpy's PCG64 stream, item list with swap-removal ----- */
static inline uint64_t pcg64_next(uint64_t *s) {  /* s: state high, low; increment high, low */
    const __uint128_t mult = ((__uint128_t)0x2360ED051FC65DA4ULL << 64) | 0x4385DF649FCCF645ULL;
    __uint128_t state = ((__uint128_t)s[0] << 64) | s[1], inc = ((__uint128_t)s[2] << 64) | s[3];
    state = state * mult + inc;
    s[0] = (uint64_t)(state >> 64);
    s[1] = (uint64_t)state;
    uint64_t x = s[0] ^ s[1];
    unsigned rot = (unsigned)(state >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

/* Generator.random(): 53 random bits; clock[p] counts the draws (the Python side replays them) */
static inline double random_uniform(kern_t *k, int64_t p) {
    k->r->clock[p]++;
    return (double)(pcg64_next(k->r->rng + 4 * p) >> 11) * (1.0 / 9007199254740992.0);
}

static int64_t random_victim(kern_t *k, int64_t p) {
    const int32_t *items = k->heap + k->hbase[p];
    int64_t n = k->hsize[p];
    if (n == 0) return -1;
    for (int t = 0; t < 32; t++) {
        int32_t o = items[(int64_t)(random_uniform(k, p) * (double)n)];
        if (k->guard[o] != k->unit_id) return o;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += k->guard[items[i]] != k->unit_id;
    if (m == 0) return -1;
    int64_t pick = (int64_t)(random_uniform(k, p) * (double)m);
    for (int64_t i = 0; i < n; i++)
        if (k->guard[items[i]] != k->unit_id && pick-- == 0) return items[i];
    return -1;
}

static inline void random_insert(kern_t *k, int64_t p, int32_t obj) {
    k->pos[obj] = k->hsize[p];
    k->heap[k->hbase[p] + k->hsize[p]++] = obj;
}

static inline void random_remove(kern_t *k, int64_t p, int32_t obj) {
    int32_t *items = k->heap + k->hbase[p];
    int64_t i = k->pos[obj];
    int32_t last = items[--k->hsize[p]];
    k->pos[obj] = -1;
    if (last != obj) {
        items[i] = last;
        k->pos[last] = i;
    }
}

/* ---- the verbs ---------------------------------------------------------------------------- */
static inline void on_access(kern_t *k, int64_t p, int32_t obj, int64_t req) {
    switch (k->pol) {
    case POL_LRU:
        list_unlink(k, Q(p, 0), obj);
        list_push(k, Q(p, 0), obj);
        break;
    case POL_LEAST_STALE:
        if (k->cur_pass[obj] != k->pass) {  /* a stale object becomes current */
            list_unlink(k, Q(p, 0), obj);
            list_push(k, Q(p, 1), obj);
            k->cur_pass[obj] = k->pass;
        }
        break;
    case POL_LFU:
        heap_set(k, p, obj, k->key[obj] + k->unit, ++k->r->clock[p]);
        break;
    case POL_LFU_COUNTS:
        counts_access(k, p, obj);
        k->stamp[obj] = ++k->r->clock[p];
        break;
    case POL_BELADY:
        heap_set(k, p, obj, -(double)k->next_req[req], ++k->r->clock[p]);
        break;
    case POL_SLRU:
        slru_access(k, p, obj);
        break;
    case POL_ARC:
        seg_unlink(k, p, obj);
        seg_push(k, p, T2, obj);
        break;
    case POL_LRU_DS:
        k->current[p] = layer_of(k, obj);
        lruds_touch(k, p, obj, 1);
        break;
    case POL_MOE_INFINITY:
        moe_touch(k, p, obj, 1);
        break;
    default: /* FIFO, Random: a hit changes nothing */
        break;
    }
}

/* `req` < 0: a prefetch insertion */
static inline void on_insert(kern_t *k, int64_t p, int32_t obj, int64_t req) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
        list_push(k, Q(p, 0), obj);
        break;
    case POL_LEAST_STALE:
        list_push(k, Q(p, 1), obj);
        k->cur_pass[obj] = k->pass;
        break;
    case POL_LFU:
        heap_set(k, p, obj, k->unit, ++k->r->clock[p]);
        break;
    case POL_LFU_COUNTS:
        counts_insert(k, p, obj);
        k->stamp[obj] = ++k->r->clock[p];
        break;
    case POL_BELADY:
        heap_set(k, p, obj, -(double)k->next_req[req], ++k->r->clock[p]);
        break;
    case POL_SLRU:
        seg_push(k, p, PROBATION, obj);
        break;
    case POL_ARC:
        arc_insert(k, p, obj);
        break;
    case POL_LRU_DS:
        if (req >= 0) k->current[p] = layer_of(k, obj);
        lruds_touch(k, p, obj, 0);
        break;
    case POL_MOE_INFINITY:
        moe_touch(k, p, obj, req >= 0);
        break;
    case POL_RANDOM:
        random_insert(k, p, obj);
        break;
    }
}

static inline void on_evict(kern_t *k, int64_t p, int32_t obj) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
    case POL_LRU_DS:
        list_unlink(k, Q(p, 0), obj);
        break;
    case POL_LEAST_STALE:
        list_unlink(k, Q(p, k->cur_pass[obj] == k->pass), obj);
        break;
    case POL_LFU_COUNTS:
        bucket_remove(k, p, obj);
        break;
    case POL_SLRU:
        seg_unlink(k, p, obj);
        break;
    case POL_ARC: {
        int from = k->where[obj];
        seg_unlink(k, p, obj);
        seg_push(k, p, from == T1 ? B1 : B2, obj);
        arc_trim(k, p);
        break;
    }
    case POL_RANDOM:
        random_remove(k, p, obj);
        break;
    default:
        heap_remove(k, group_of(k, p, obj), obj);
    }
}

/* EvictionPolicy.admit: room must be made for obj (req < 0: a prefetch) */
static inline void policy_admit(kern_t *k, int64_t p, int32_t obj, int64_t req) {
    switch (k->pol) {
    case POL_ARC:
        arc_adapt(k, p, obj);
        k->pending[p] = obj;
        break;
    case POL_LRU_DS:
    case POL_MOE_INFINITY:
        if (req >= 0) k->current[p] = layer_of(k, obj);
        break;
    }
}

static inline int64_t victim(kern_t *k, int64_t p) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
        return list_first_eligible(k, Q(p, 0));
    case POL_LEAST_STALE:
    case POL_SLRU: {
        int64_t v = list_first_eligible(k, Q(p, 0));
        return v >= 0 ? v : list_first_eligible(k, Q(p, 1));
    }
    case POL_LFU_COUNTS:
        return counts_first_eligible(k, p);
    case POL_ARC:
        return arc_victim(k, p);
    case POL_LRU_DS:
        return lruds_victim(k, p);
    case POL_MOE_INFINITY:
        return moe_victim(k, p);
    case POL_RANDOM:
        return random_victim(k, p);
    default:
        return heap_first_eligible(k, p);
    }
}

/* DecayingUnit.advance, then the policy's renormalisation (LFU's keys; moe-infinity's counts too) */
static void decay_pass(kern_t *k) {
    replay_t *r = k->r;
    k->unit *= k->growth;
    if (k->unit <= RENORMALISE_AT) return;
    double factor = 1.0 / k->unit;
    if (k->has_count)
        for (int64_t o = 0; o < r->n_objects; o++)
            if (k->has_count[o]) k->count[o] *= factor;
    for (int64_t g = 0; g < k->n_groups; g++) {
        const int32_t *h = k->heap + k->hbase[g];
        for (int64_t i = 0; i < k->hsize[g]; i++) k->key[h[i]] *= factor;
        heap_rebuild(k, g);  /* scaled keys may tie: restore the (key, stamp) order */
    }
    k->unit = 1.0;
}

static void pass_begin(kern_t *k, int64_t pass) {
    replay_t *r = k->r;
    k->pass = pass;
    if (k->pol == POL_LEAST_STALE) {
        for (int64_t p = 0; p < r->n_partitions; p++) list_concat(k, Q(p, 0), Q(p, 1));
    } else if ((k->pol == POL_LFU || k->pol == POL_MOE_INFINITY) && r->param[0] != 1.0) {
        decay_pass(k);
    }
}

/* The final policy state, per partition: tracked objects (and ARC's ghosts) in list or heap
   order with their list, key and stamp; per-partition scalars; moe-infinity's counts. */
static void export_policy_state(kern_t *k) {
    replay_t *r = k->r;
    int64_t out = 0;
    for (int64_t p = 0; p < r->n_partitions; p++) {
        int64_t start = out;
        if (k->pol == POL_LFU_COUNTS) {
            for (int32_t b = k->b_first[p]; b >= 0; b = k->b_next[b])
                for (int32_t o = k->b_head[b]; o >= 0; o = k->next[o], out++) {
                    r->order_obj[out] = o;
                    r->order_key[out] = (double)k->b_count[b];
                    r->order_stamp[out] = k->stamp[o];
                    r->order_queue[out] = 0;
                }
        } else if (k->heap) {
            int64_t first, n;
            groups_of(k, p, &first, &n);
            for (int64_t g = first; g < first + n; g++) {
                const int32_t *h = k->heap + k->hbase[g];
                for (int64_t i = 0; i < k->hsize[g]; i++, out++) {
                    r->order_obj[out] = h[i];
                    r->order_key[out] = k->key ? k->key[h[i]] : 0.0;
                    r->order_stamp[out] = k->stamp ? k->stamp[h[i]] : 0;
                    r->order_queue[out] = 0;
                }
            }
        } else {
            for (int64_t q = 0; q < 4; q++)
                for (int32_t o = k->head[Q(p, q)]; o >= 0; o = k->next[o], out++) {
                    r->order_obj[out] = o;
                    r->order_queue[out] = (uint8_t)q;
                    r->order_key[out] = 0.0;
                    r->order_stamp[out] = k->stamp ? k->stamp[o] : 0;
                }
        }
        r->order_count[p] = out - start;
        double *v = r->part_value + 3 * p;
        v[0] = k->arc_p ? k->arc_p[p] : 0.0;
        v[1] = k->adapted ? (double)k->adapted[p] : -1.0;
        v[2] = k->pending ? (double)k->pending[p] : -1.0;
        if (k->current) v[0] = (double)k->current[p];
    }
    if (k->has_count)
        for (int64_t o = 0; o < r->n_objects; o++) {
            r->obj_flag[o] = k->has_count[o];
            r->obj_value[o] = k->count[o];
        }
    r->unit = k->unit;
}
