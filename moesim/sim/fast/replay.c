/*
 * moesim count replay, compiled: the same decisions as CacheCore.serve_cell driven by
 * moesim.sim.count_replay (reference path), for LRU, FIFO, static-hot (LRU over unpinned objects),
 * Least-Stale, LFU (with decay) and Belady/MIN (with or without bypass), both scopes
 * (one partition, or one per layer) and both replay modes (event-atomic cells, sequential).
 *
 * Why C and not numba: importing llvmlite adds ~125 MB of resident memory before any work,
 * more than half the fixed allowance of the 50 M-access memory target (bench/RESULTS.md).
 * The file needs only a C99 compiler and libc; moesim.sim.fast.build compiles it on first use.
 *
 * Exactness: every step mirrors the Python code it replaces; tests/perf/test_fast_path.py checks
 * outcomes, victims in order, counters, final core state and final policy state against the
 * reference for every covered policy. Per-object state lives in flat arrays indexed by object id;
 * the request stream is never materialised (event-mode requests are deduplicated per cell with a
 * stamp array), so memory is the outcome array plus O(objects).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ABSENT = 0, RESIDENT = 1 };
enum { HIT = 0, MISS_COMPULSORY = 2, MISS_CAPACITY = 3, MISS_COLLISION = 4 };
enum { POL_LRU = 0, POL_FIFO = 1, POL_LEAST_STALE = 2, POL_LFU = 3, POL_BELADY = 4 };
/* LFU at decay 1 (integer counts) runs on frequency buckets instead of the heap: O(1) per hook */
enum { POL_LFU_COUNTS = 5 };
enum { OK = 0, ERR_NOMEM = -1, ERR_OBJECT = -2, ERR_POLICY = -3, ERR_VICTIMS = -4, ERR_REQUESTS = -5,
       ERR_BUCKETS = -6, ERR_LAYOUT = -7 };

#define NEVER (INT64_MAX / 4) /* moesim.policies.base.NEVER */
#define RENORMALISE_AT 1e100  /* moesim.policies.eviction._counts._RENORMALISE_AT */

/* Every field is 8 bytes wide so the ctypes mirror (moesim/sim/fast/kernel.py) has no padding. */
typedef struct {
    /* trace, read only */
    int64_t n_passes, n_cells, n_accesses, n_experts;
    const int64_t *pass_cell_offsets; /* n_passes + 1 */
    const int64_t *cell_offsets;      /* n_cells + 1 */
    const void *cell_layer;           /* n_cells, int16 or int32 */
    int64_t layer_is_int32;
    const void *expert;               /* n_accesses, int16 or int32 */
    int64_t expert_is_int32;
    int64_t sequential;
    /* objects, read only */
    int64_t n_objects, n_partitions;
    const int64_t *object_bytes;      /* n_objects */
    const int64_t *partition_of;      /* n_objects */
    const int64_t *capacity;          /* n_partitions */
    /* policy */
    int64_t policy, belady_bypass;
    double lfu_decay;
    /* core state, read and written (the CacheCore's own arrays) */
    uint8_t *state;
    const uint8_t *pinned;
    uint8_t *seen;
    int64_t *evicted_in_pass;
    int64_t *used;                    /* n_partitions */
    /* per-request outputs */
    int64_t n_requests;
    int8_t *outcomes;
    uint8_t *bypassed;                /* must arrive zeroed */
    /* victims log, optional (victims_cap 0 = off) */
    int64_t victims_cap;
    int64_t *victim_request, *victim_obj;
    int64_t n_victims;
    /* counters, written */
    int64_t evictions, bypasses;
    /* final policy state, written: per partition the tracked objects in eviction order
       (lists) or in heap order (heaps), with their queue, key and stamp */
    int64_t *order_obj;               /* n_objects */
    int64_t *order_count;             /* n_partitions */
    uint8_t *order_queue;             /* n_objects: least-stale 0 = stale, 1 = current */
    double *order_key;                /* n_objects */
    int64_t *order_stamp;             /* n_objects */
    int64_t *clock;                   /* n_partitions: the policies' stamp clocks */
    double unit;                      /* LFU's increment after the last pass */
    int64_t error_index;              /* the access an ERR_OBJECT was found at */
} replay_t;

typedef struct {
    replay_t *r;
    int64_t pol;         /* r->policy, or POL_LFU_COUNTS */
    int64_t pass;
    int64_t unit_id;     /* stamp of the protection unit being served */
    int64_t *guard;      /* guard[obj] == unit_id: obj belongs to the unit being served */
    /* lists (LRU, FIFO, Least-Stale): queue q of partition p is 2p + q */
    int32_t *prev, *next, *head, *tail;
    int64_t *cur_pass;   /* Least-Stale: the pass in which obj joined the current queue */
    /* heaps (LFU, Belady): partition p owns heap[hbase[p] .. hbase[p] + hsize[p]) */
    int32_t *heap;
    int64_t *hbase, *hsize, *pos, *stamp, *aux;
    double *key;
    double unit, growth;
    int64_t *next_req;   /* Belady: next request of the same object, per request */
    /* frequency buckets (LFU at decay 1): per partition a list of buckets in increasing count,
       each a list (prev/next above) of its objects in the order they reached that count */
    int32_t *bucket_of, *b_prev, *b_next, *b_head, *b_tail, *b_first;
    int64_t *b_count;
    int32_t b_free;
    int64_t error;       /* set by a hook that cannot go on (checked after every unit) */
    int64_t *miss_req, *miss_obj;
    /* the planner's extras (plan.c); NULL and 0 in a count replay */
    uint8_t *prefetched_unused;  /* the core's: prefetched, not demanded yet */
    int64_t *evict_log;          /* the victims of the admission under way */
    int64_t n_log, prefetch_useful, prefetch_wasted;
} kern_t;

static inline int64_t load_index(const void *base, int64_t is32, int64_t i) {
    return is32 ? (int64_t)((const int32_t *)base)[i] : (int64_t)((const int16_t *)base)[i];
}

/* ---- doubly linked lists ------------------------------------------------------------------ */
static inline void list_push(kern_t *k, int64_t q, int32_t obj) {
    int32_t t = k->tail[q];
    k->prev[obj] = t;
    k->next[obj] = -1;
    if (t >= 0) k->next[t] = obj; else k->head[q] = obj;
    k->tail[q] = obj;
}

static inline void list_unlink(kern_t *k, int64_t q, int32_t obj) {
    int32_t p = k->prev[obj], n = k->next[obj];
    if (p >= 0) k->next[p] = n; else k->head[q] = n;
    if (n >= 0) k->prev[n] = p; else k->tail[q] = p;
}

/* append queue b to queue a, leaving b empty (Least-Stale's pass start) */
static inline void list_concat(kern_t *k, int64_t a, int64_t b) {
    if (k->head[b] < 0) return;
    if (k->tail[a] < 0) {
        k->head[a] = k->head[b];
    } else {
        k->next[k->tail[a]] = k->head[b];
        k->prev[k->head[b]] = k->tail[a];
    }
    k->tail[a] = k->tail[b];
    k->head[b] = k->tail[b] = -1;
}

static inline int64_t list_first_eligible(const kern_t *k, int64_t q) {
    for (int32_t o = k->head[q]; o >= 0; o = k->next[o])
        if (k->guard[o] != k->unit_id) return o;
    return -1;
}

/* ---- indexed min-heaps on (key, stamp) -------------------------------------------------- */
/* LazyMinHeap orders (key, stamp, obj) tuples; stamps are unique within a partition, so the
   minimum over (key, stamp) is the same entry. */
static inline int before(const kern_t *k, int32_t a, int32_t b) {
    return k->key[a] < k->key[b] || (k->key[a] == k->key[b] && k->stamp[a] < k->stamp[b]);
}

static void sift_up(kern_t *k, int32_t *h, int64_t i) {
    int32_t obj = h[i];
    while (i > 0) {
        int64_t parent = (i - 1) >> 1;
        if (!before(k, obj, h[parent])) break;
        h[i] = h[parent];
        k->pos[h[i]] = i;
        i = parent;
    }
    h[i] = obj;
    k->pos[obj] = i;
}

static void sift_down(kern_t *k, int32_t *h, int64_t n, int64_t i) {
    int32_t obj = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(k, h[c + 1], h[c])) c++;
        if (!before(k, h[c], obj)) break;
        h[i] = h[c];
        k->pos[h[i]] = i;
        i = c;
    }
    h[i] = obj;
    k->pos[obj] = i;
}

static void heap_set(kern_t *k, int64_t p, int32_t obj, double key, int64_t stamp) {
    int32_t *h = k->heap + k->hbase[p];
    k->key[obj] = key;
    k->stamp[obj] = stamp;
    if (k->pos[obj] < 0) {
        int64_t i = k->hsize[p]++;
        h[i] = obj;
        sift_up(k, h, i);
    } else {
        int64_t i = k->pos[obj];
        sift_up(k, h, i);
        sift_down(k, h, k->hsize[p], k->pos[obj]);
    }
}

static void heap_remove(kern_t *k, int64_t p, int32_t obj) {
    int32_t *h = k->heap + k->hbase[p];
    int64_t i = k->pos[obj];
    int64_t last = --k->hsize[p];
    k->pos[obj] = -1;
    if (i == last) return;
    int32_t moved = h[last];
    h[i] = moved;
    k->pos[moved] = i;
    sift_up(k, h, i);
    sift_down(k, h, last, k->pos[moved]);
}

static void heap_rebuild(kern_t *k, int64_t p) {
    int32_t *h = k->heap + k->hbase[p];
    int64_t n = k->hsize[p];
    for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(k, h, n, i);
}

/* The smallest entry whose object is eligible: a best-first walk of the heap from its root,
   ordered by the same (key, stamp), that stops at the first eligible entry; it visits at most
   2 x (ineligible entries smaller than the answer) + 1 nodes. aux is a scratch heap of indices. */
static int64_t heap_first_eligible(kern_t *k, int64_t p) {
    const int32_t *h = k->heap + k->hbase[p];
    int64_t n = k->hsize[p], m = 0;
    int64_t *aux = k->aux;
    if (n == 0) return -1;
    aux[m++] = 0;
    while (m > 0) {
        int64_t top = aux[0];
        /* pop aux's minimum */
        int64_t moved = aux[--m], i = 0;
        for (;;) {
            int64_t c = 2 * i + 1;
            if (c >= m) break;
            if (c + 1 < m && before(k, h[aux[c + 1]], h[aux[c]])) c++;
            if (!before(k, h[aux[c]], h[moved])) break;
            aux[i] = aux[c];
            i = c;
        }
        if (m > 0) aux[i] = moved;
        int32_t obj = h[top];
        if (k->guard[obj] != k->unit_id) return obj;
        for (int64_t c = 2 * top + 1; c <= 2 * top + 2 && c < n; c++) {
            int64_t j = m++;
            while (j > 0) {
                int64_t parent = (j - 1) >> 1;
                if (!before(k, h[c], h[aux[parent]])) break;
                aux[j] = aux[parent];
                j = parent;
            }
            aux[j] = c;
        }
    }
    return -1;
}

/* ---- frequency buckets ------------------------------------------------------------------ */
/* LFU's order is (count, stamp), and an object's stamp is renewed whenever its count grows, so
   within one count the objects are in the order they reached it: a bucket per count holding a
   FIFO list gives the same minimum as the heap, with O(1) hooks (libCacheSim's LFU layout). */
static int32_t bucket_insert_after(kern_t *k, int64_t p, int32_t after, int64_t count) {
    int32_t b = k->b_free;
    if (b < 0) {  /* cannot happen with the pool sized below; refuse rather than corrupt */
        k->error = ERR_BUCKETS;
        return -1;
    }
    k->b_free = k->b_next[b];
    k->b_count[b] = count;
    k->b_head[b] = k->b_tail[b] = -1;
    int32_t nxt = after >= 0 ? k->b_next[after] : k->b_first[p];
    k->b_prev[b] = after;
    k->b_next[b] = nxt;
    if (after >= 0) k->b_next[after] = b; else k->b_first[p] = b;
    if (nxt >= 0) k->b_prev[nxt] = b;
    return b;
}

static void bucket_push(kern_t *k, int32_t b, int32_t obj) {
    int32_t t = k->b_tail[b];
    k->prev[obj] = t;
    k->next[obj] = -1;
    if (t >= 0) k->next[t] = obj; else k->b_head[b] = obj;
    k->b_tail[b] = obj;
    k->bucket_of[obj] = b;
}

/* take obj out of its bucket, dropping the bucket if that empties it */
static void bucket_remove(kern_t *k, int64_t p, int32_t obj) {
    int32_t b = k->bucket_of[obj], pr = k->prev[obj], nx = k->next[obj];
    if (pr >= 0) k->next[pr] = nx; else k->b_head[b] = nx;
    if (nx >= 0) k->prev[nx] = pr; else k->b_tail[b] = pr;
    if (k->b_head[b] >= 0) return;
    int32_t bp = k->b_prev[b], bn = k->b_next[b];
    if (bp >= 0) k->b_next[bp] = bn; else k->b_first[p] = bn;
    if (bn >= 0) k->b_prev[bn] = bp;
    k->b_next[b] = k->b_free;
    k->b_free = b;
}

static void counts_insert(kern_t *k, int64_t p, int32_t obj) {
    int32_t b = k->b_first[p];
    if (b < 0 || k->b_count[b] != 1) b = bucket_insert_after(k, p, -1, 1);
    if (b >= 0) bucket_push(k, b, obj);
}

static void counts_access(kern_t *k, int64_t p, int32_t obj) {
    int32_t b = k->bucket_of[obj];
    int64_t count = k->b_count[b] + 1;
    int32_t up = k->b_next[b];
    if (up < 0 || k->b_count[up] != count) up = bucket_insert_after(k, p, b, count);
    if (up < 0) return;
    bucket_remove(k, p, obj);
    bucket_push(k, up, obj);
}

static int64_t counts_first_eligible(const kern_t *k, int64_t p) {
    for (int32_t b = k->b_first[p]; b >= 0; b = k->b_next[b])
        for (int32_t o = k->b_head[b]; o >= 0; o = k->next[o])
            if (k->guard[o] != k->unit_id) return o;
    return -1;
}

/* ---- policy hooks (EvictionPolicy's verbs) ---------------------------------------------- */
static inline void on_access(kern_t *k, int64_t p, int32_t obj, int64_t req) {
    switch (k->pol) {
    case POL_LRU:
        list_unlink(k, 2 * p, obj);
        list_push(k, 2 * p, obj);
        break;
    case POL_FIFO:
        break;
    case POL_LEAST_STALE:
        if (k->cur_pass[obj] != k->pass) {  /* a stale object becomes current */
            list_unlink(k, 2 * p, obj);
            list_push(k, 2 * p + 1, obj);
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
    }
}

static inline void on_insert(kern_t *k, int64_t p, int32_t obj, int64_t req) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
        list_push(k, 2 * p, obj);
        break;
    case POL_LEAST_STALE:
        list_push(k, 2 * p + 1, obj);
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
    }
}

static inline void on_evict(kern_t *k, int64_t p, int32_t obj) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
        list_unlink(k, 2 * p, obj);
        break;
    case POL_LEAST_STALE:
        list_unlink(k, 2 * p + (k->cur_pass[obj] == k->pass), obj);
        break;
    case POL_LFU_COUNTS:
        bucket_remove(k, p, obj);
        break;
    default:
        heap_remove(k, p, obj);
    }
}

static inline int64_t victim(kern_t *k, int64_t p) {
    switch (k->pol) {
    case POL_LRU:
    case POL_FIFO:
        return list_first_eligible(k, 2 * p);
    case POL_LEAST_STALE: {
        int64_t v = list_first_eligible(k, 2 * p);
        return v >= 0 ? v : list_first_eligible(k, 2 * p + 1);
    }
    case POL_LFU_COUNTS:
        return counts_first_eligible(k, p);
    default:
        return heap_first_eligible(k, p);
    }
}

static void pass_begin(kern_t *k, int64_t pass) {
    replay_t *r = k->r;
    k->pass = pass;
    if (r->policy == POL_LEAST_STALE) {
        for (int64_t p = 0; p < r->n_partitions; p++) list_concat(k, 2 * p, 2 * p + 1);
    } else if (r->policy == POL_LFU && r->lfu_decay != 1.0) {
        /* DecayingUnit.advance, then LFU.on_pass_begin's renormalisation */
        k->unit *= k->growth;
        if (k->unit > RENORMALISE_AT) {
            double factor = 1.0 / k->unit;
            for (int64_t p = 0; p < r->n_partitions; p++) {
                const int32_t *h = k->heap + k->hbase[p];
                for (int64_t i = 0; i < k->hsize[p]; i++) k->key[h[i]] *= factor;
                heap_rebuild(k, p);  /* scaled keys may tie: restore the (key, stamp) order */
            }
            k->unit = 1.0;
        }
    }
}

/* ---- the cache core ------------------------------------------------------------------- */
/* CacheCore.serve_cell's classification of one request; returns 1 for a miss. */
static inline int classify(kern_t *k, int64_t req, int32_t obj) {
    replay_t *r = k->r;
    if (r->state[obj] == RESIDENT) {
        r->outcomes[req] = HIT;
        if (k->prefetched_unused && k->prefetched_unused[obj]) {
            k->prefetched_unused[obj] = 0;
            k->prefetch_useful++;
        }
        if (!r->pinned[obj]) {
            on_access(k, r->partition_of[obj], obj, req);
            r->seen[obj] = 1;  /* a prefetched object is seen by its first demand */
        }
        return 0;
    }
    if (!r->seen[obj]) {
        r->outcomes[req] = MISS_COMPULSORY;
        r->seen[obj] = 1;
    } else if (r->evicted_in_pass[obj] == k->pass) {
        r->outcomes[req] = MISS_COLLISION;
    } else {
        r->outcomes[req] = MISS_CAPACITY;
    }
    return 1;
}

/* CacheCore._evict: v leaves partition p (logged, and counted as wasted if it was an unused prefetch). */
static void evict(kern_t *k, int64_t p, int64_t v, int64_t req) {
    replay_t *r = k->r;
    r->state[v] = ABSENT;
    r->used[p] -= r->object_bytes[v];
    r->evicted_in_pass[v] = k->pass;
    r->evictions++;
    on_evict(k, p, (int32_t)v);
    if (k->prefetched_unused && k->prefetched_unused[v]) {
        k->prefetched_unused[v] = 0;
        k->prefetch_wasted++;
    }
    if (k->evict_log) k->evict_log[k->n_log++] = v;
    if (r->victims_cap) {
        if (r->n_victims >= r->victims_cap) {
            k->error = ERR_VICTIMS;
            return;
        }
        r->victim_request[r->n_victims] = req;
        r->victim_obj[r->n_victims] = v;
        r->n_victims++;
    }
}

/* CacheCore.admit's loop: evict in policy order (protected objects skipped) until `size` more
   bytes fit partition p. Returns 1 when they fit, 0 when they cannot; victims evicted before
   that stay evicted. `req` >= 0 is the demand request being admitted (Belady's bypass test). */
static int make_room(kern_t *k, int64_t p, int64_t size, int64_t req) {
    replay_t *r = k->r;
    int64_t cap = r->capacity[p];
    if (r->used[p] + size <= cap) return 1;
    if (size > cap) return 0;
    /* Belady.admit arms the bypass test for the first victim only */
    int pending = req >= 0 && r->policy == POL_BELADY && r->belady_bypass;
    for (;;) {
        int64_t v = victim(k, p);
        if (v >= 0 && pending && (double)k->next_req[req] > -k->key[v]) v = -1;
        pending = 0;
        if (v < 0) return 0;
        evict(k, p, v, req);
        if (r->used[p] + size <= cap) return 1;
    }
}

/* CacheCore.serve_cell's admission of one missed request (evicting as needed, or bypassing).
   Returns 1 when the object was admitted. */
static int admit(kern_t *k, int64_t req, int32_t obj) {
    replay_t *r = k->r;
    int64_t p = r->partition_of[obj];
    int64_t size = r->object_bytes[obj];
    if (!make_room(k, p, size, req)) {
        r->bypasses++;
        r->bypassed[req] = 1;
        return 0;
    }
    r->used[p] += size;
    r->state[obj] = RESIDENT;
    on_insert(k, p, obj, req);
    return 1;
}

/* next_req[i]: the next request for request i's object (NEVER if none); StreamFuture.next_request */
static int fill_next_requests(kern_t *k) {
    replay_t *r = k->r;
    int64_t *last = malloc(sizeof(int64_t) * (size_t)(r->n_objects > 0 ? r->n_objects : 1));
    int64_t *mark = malloc(sizeof(int64_t) * (size_t)(r->n_objects > 0 ? r->n_objects : 1));
    if (!last || !mark) {
        free(last);
        free(mark);
        return ERR_NOMEM;
    }
    for (int64_t o = 0; o < r->n_objects; o++) {
        last[o] = NEVER;
        mark[o] = -1;
    }
    int64_t req = r->n_requests;
    for (int64_t c = r->n_cells - 1; c >= 0; c--) {
        int64_t lo = r->cell_offsets[c], hi = r->cell_offsets[c + 1];
        int64_t base = load_index(r->cell_layer, r->layer_is_int32, c) * r->n_experts;
        if (r->sequential) {
            for (int64_t a = hi - 1; a >= 0 && a >= lo; a--) {
                int64_t obj = base + load_index(r->expert, r->expert_is_int32, a);
                k->next_req[--req] = last[obj];
                last[obj] = req;
            }
            continue;
        }
        int64_t n = 0;  /* distinct objects of the cell, then their requests in first-seen order */
        for (int64_t a = lo; a < hi; a++) {
            int64_t obj = base + load_index(r->expert, r->expert_is_int32, a);
            if (mark[obj] != 2 * c) {
                mark[obj] = 2 * c;
                n++;
            }
        }
        req -= n;
        if (req < 0) break;
        int64_t i = req;
        for (int64_t a = lo; a < hi; a++) {
            int64_t obj = base + load_index(r->expert, r->expert_is_int32, a);
            if (mark[obj] != 2 * c + 1) {
                mark[obj] = 2 * c + 1;
                k->next_req[i] = last[obj];
                last[obj] = i++;
            }
        }
    }
    free(last);
    free(mark);
    return req == 0 ? OK : ERR_REQUESTS;
}

/* Check the offsets (ERR_LAYOUT, error_index = the pass or cell) and every access's object id
   (ERR_OBJECT, error_index = the access) before anything is indexed with them. */
static int check_objects(replay_t *r) {
    if (r->pass_cell_offsets[0] != 0 || r->pass_cell_offsets[r->n_passes] != r->n_cells) {
        r->error_index = -1;
        return ERR_LAYOUT;
    }
    for (int64_t p = 0; p < r->n_passes; p++)
        if (r->pass_cell_offsets[p + 1] < r->pass_cell_offsets[p]) {
            r->error_index = p;
            return ERR_LAYOUT;
        }
    if (r->cell_offsets[0] != 0 || r->cell_offsets[r->n_cells] != r->n_accesses) {
        r->error_index = -1;
        return ERR_LAYOUT;
    }
    for (int64_t c = 0; c < r->n_cells; c++)
        if (r->cell_offsets[c + 1] < r->cell_offsets[c]) {
            r->error_index = c;
            return ERR_LAYOUT;
        }
    for (int64_t c = 0; c < r->n_cells; c++) {
        int64_t layer = load_index(r->cell_layer, r->layer_is_int32, c);
        for (int64_t a = r->cell_offsets[c]; a < r->cell_offsets[c + 1]; a++) {
            int64_t e = load_index(r->expert, r->expert_is_int32, a);
            if (layer < 0 || e < 0 || e >= r->n_experts || layer * r->n_experts + e >= r->n_objects) {
                r->error_index = a;
                return ERR_OBJECT;
            }
        }
    }
    return OK;
}

/* The event-mode request stream (moesim.sim.requests.build_request_stream): every cell's distinct
   objects in order of first appearance. Fills, where not NULL, each request's object and cell,
   every access's request (those arrays must hold n_accesses entries) and the requests' cell
   offsets (n_cells + 1). Returns the number of requests, or a negative error. */
int64_t moesim_event_stream(replay_t *r, int32_t *req_obj, int32_t *req_cell, int64_t *access_request,
                            int64_t *req_cell_offsets) {
    int rc = check_objects(r);
    if (rc != OK) return rc;
    size_t n_obj = (size_t)(r->n_objects > 0 ? r->n_objects : 1);
    int64_t *mark = malloc(sizeof(int64_t) * n_obj);
    int64_t *slot = access_request ? malloc(sizeof(int64_t) * n_obj) : NULL;
    if (!mark || (access_request && !slot)) {
        free(mark);
        free(slot);
        return ERR_NOMEM;
    }
    for (int64_t o = 0; o < r->n_objects; o++) mark[o] = -1;
    int64_t n = 0;
    if (req_cell_offsets) req_cell_offsets[0] = 0;
    for (int64_t c = 0; c < r->n_cells; c++) {
        int64_t base = load_index(r->cell_layer, r->layer_is_int32, c) * r->n_experts;
        for (int64_t a = r->cell_offsets[c]; a < r->cell_offsets[c + 1]; a++) {
            int64_t obj = base + load_index(r->expert, r->expert_is_int32, a);
            if (mark[obj] != c) {
                mark[obj] = c;
                if (slot) slot[obj] = n;
                if (req_obj) req_obj[n] = (int32_t)obj;
                if (req_cell) req_cell[n] = (int32_t)c;
                n++;
            }
            if (access_request) access_request[a] = slot[obj];
        }
        if (req_cell_offsets) req_cell_offsets[c + 1] = n;
    }
    free(mark);
    free(slot);
    return n;
}

/* The number of event-mode requests, and their cell offsets when req_cell_offsets is not NULL. */
int64_t moesim_event_requests(replay_t *r, int64_t *req_cell_offsets) {
    return moesim_event_stream(r, NULL, NULL, NULL, req_cell_offsets);
}

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
        } else if (k->pol == POL_LFU || k->pol == POL_BELADY) {
            const int32_t *h = k->heap + k->hbase[p];
            for (int64_t i = 0; i < k->hsize[p]; i++, out++) {
                r->order_obj[out] = h[i];
                r->order_key[out] = k->key[h[i]];
                r->order_stamp[out] = k->stamp[h[i]];
                r->order_queue[out] = 0;
            }
        } else {
            for (int64_t q = 0; q < 2; q++)
                for (int32_t o = k->head[2 * p + q]; o >= 0; o = k->next[o], out++) {
                    r->order_obj[out] = o;
                    r->order_queue[out] = (uint8_t)q;
                    r->order_key[out] = 0.0;
                    r->order_stamp[out] = 0;
                }
        }
        r->order_count[p] = out - start;
    }
    r->unit = k->unit;
}

#define ALLOC(ptr, n)                                                    \
    do {                                                                 \
        (ptr) = malloc(sizeof(*(ptr)) * (size_t)((n) > 0 ? (n) : 1));   \
        if (!(ptr)) goto nomem;                                          \
    } while (0)

/* Allocate and initialise the kernel's policy state for r (fresh policies: nothing tracked).
   On failure everything allocated is freed by kern_close. */
static int kern_open(kern_t *k, replay_t *r) {
    memset(k, 0, sizeof(*k));
    k->r = r;
    k->pass = -1;
    if (r->policy < POL_LRU || r->policy > POL_BELADY) return ERR_POLICY;
    int64_t n = r->n_objects, np = r->n_partitions;
    k->pol = r->policy == POL_LFU && r->lfu_decay == 1.0 ? POL_LFU_COUNTS : r->policy;
    int lists = r->policy <= POL_LEAST_STALE || k->pol == POL_LFU_COUNTS;
    ALLOC(k->guard, n);
    ALLOC(k->miss_req, n);
    ALLOC(k->miss_obj, n);
    for (int64_t o = 0; o < n; o++) k->guard[o] = -1;
    if (lists) {
        ALLOC(k->prev, n);
        ALLOC(k->next, n);
        ALLOC(k->head, 2 * np);
        ALLOC(k->tail, 2 * np);
        ALLOC(k->cur_pass, n);
        for (int64_t q = 0; q < 2 * np; q++) k->head[q] = k->tail[q] = -1;
        for (int64_t o = 0; o < n; o++) k->cur_pass[o] = INT64_MIN;
    }
    if (k->pol == POL_LFU_COUNTS) {
        /* every bucket in a list holds an object, and a hook adds one bucket before it may free
           one: n + 1 nodes always suffice (n + 2 kept on the free list) */
        int64_t nb = n + 2;
        ALLOC(k->bucket_of, n);
        ALLOC(k->b_prev, nb);
        ALLOC(k->b_next, nb);
        ALLOC(k->b_head, nb);
        ALLOC(k->b_tail, nb);
        ALLOC(k->b_count, nb);
        ALLOC(k->b_first, np);
        ALLOC(k->stamp, n);
        for (int64_t b = 0; b < nb; b++) k->b_next[b] = (int32_t)(b + 1 < nb ? b + 1 : -1);
        k->b_free = 0;
        for (int64_t p = 0; p < np; p++) k->b_first[p] = -1;
    } else if (!lists) {
        ALLOC(k->heap, n);
        ALLOC(k->hbase, np);
        ALLOC(k->hsize, np);
        ALLOC(k->pos, n);
        ALLOC(k->key, n);
        ALLOC(k->stamp, n);
        ALLOC(k->aux, n + 2);
        for (int64_t p = 0; p < np; p++) k->hbase[p] = k->hsize[p] = 0;
        for (int64_t o = 0; o < n; o++) {
            k->pos[o] = -1;
            k->key[o] = 0.0;
            k->stamp[o] = 0;
            k->hbase[r->partition_of[o]]++;  /* objects per partition, summed below */
        }
        for (int64_t p = 0, start = 0; p < np; p++) {
            int64_t count = k->hbase[p];
            k->hbase[p] = start;
            start += count;
        }
    }
    k->unit = 1.0;
    k->growth = r->policy == POL_LFU ? 1.0 / r->lfu_decay : 1.0;
    if (r->policy == POL_BELADY) {
        ALLOC(k->next_req, r->n_requests);
        return fill_next_requests(k);
    }
    return OK;
nomem:
    return ERR_NOMEM;
}

static void kern_close(kern_t *k) {
    free(k->guard);
    free(k->miss_req);
    free(k->miss_obj);
    free(k->prev);
    free(k->next);
    free(k->head);
    free(k->tail);
    free(k->cur_pass);
    free(k->heap);
    free(k->hbase);
    free(k->hsize);
    free(k->pos);
    free(k->key);
    free(k->stamp);
    free(k->aux);
    free(k->next_req);
    free(k->bucket_of);
    free(k->b_prev);
    free(k->b_next);
    free(k->b_head);
    free(k->b_tail);
    free(k->b_count);
    free(k->b_first);
    free(k->evict_log);
    memset(k, 0, sizeof(*k));
}

/* The whole replay. The core's arrays must hold its state after pins were installed, with no
   object in flight; clock[] the policies' clocks (0 for fresh ones). Returns 0 or an error. */
int64_t moesim_count_replay(replay_t *r) {
    kern_t kk;
    kern_t *k = &kk;
    memset(k, 0, sizeof(kk));
    if (r->policy < POL_LRU || r->policy > POL_BELADY) return ERR_POLICY;
    if (r->sequential && r->n_requests != r->n_accesses) return ERR_REQUESTS;
    int rc = check_objects(r);
    if (rc != OK) return rc;
    rc = kern_open(k, r);
    if (rc != OK) goto done;

    int64_t req = 0;
    for (int64_t pass = 0; pass < r->n_passes; pass++) {
        pass_begin(k, pass);
        for (int64_t c = r->pass_cell_offsets[pass]; c < r->pass_cell_offsets[pass + 1]; c++) {
            int64_t lo = r->cell_offsets[c], hi = r->cell_offsets[c + 1];
            int64_t base = load_index(r->cell_layer, r->layer_is_int32, c) * r->n_experts;
            if (r->sequential) {
                /* one protection unit per access */
                for (int64_t a = lo; a < hi; a++, req++) {
                    int32_t obj = (int32_t)(base + load_index(r->expert, r->expert_is_int32, a));
                    k->guard[obj] = ++k->unit_id;
                    if (classify(k, req, obj)) admit(k, req, obj);
                    if (k->error) {
                        rc = (int)k->error;
                        goto done;
                    }
                }
                continue;
            }
            /* event mode: classify every distinct object of the cell, then admit the misses */
            int64_t misses = 0, unit = ++k->unit_id;
            for (int64_t a = lo; a < hi; a++) {
                int32_t obj = (int32_t)(base + load_index(r->expert, r->expert_is_int32, a));
                if (k->guard[obj] == unit) continue;  /* a repeat inside the cell: the same request */
                k->guard[obj] = unit;
                if (req >= r->n_requests) {
                    rc = ERR_REQUESTS;
                    goto done;
                }
                if (classify(k, req, obj)) {
                    k->miss_req[misses] = req;
                    k->miss_obj[misses] = obj;
                    misses++;
                }
                req++;
            }
            for (int64_t m = 0; m < misses; m++) admit(k, k->miss_req[m], (int32_t)k->miss_obj[m]);
            if (k->error) {
                rc = (int)k->error;
                goto done;
            }
        }
    }
    if (req != r->n_requests) {
        rc = ERR_REQUESTS;
        goto done;
    }
    export_policy_state(k);
done:
    kern_close(k);
    return rc;
}

/* The layout version the Python side checks before calling (bump it with replay_t). */
int64_t moesim_abi_version(void) { return 1; }
int64_t moesim_replay_struct_size(void) { return (int64_t)sizeof(replay_t); }
