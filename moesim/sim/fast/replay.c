/*
 * moesim count replay, compiled: the same decisions as CacheCore.serve_cell driven by
 * moesim.sim.count_replay (reference path), for every policy in policy_hooks.c (LRU, FIFO,
 * Least-Stale, LFU, Belady/MIN, SLRU, ARC, lru-ds, moe-infinity, Random; static-hot is LRU over
 * its unpinned objects), both scopes (one partition, or one per layer) and both replay modes
 * (event-atomic cells, sequential).
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
/* policy codes: policy_hooks.c's POLICY_NAMES gives their names. LFU at decay 1 (integer counts)
   runs on frequency buckets instead of the heap (POL_LFU_COUNTS): O(1) per hook */
enum { POL_LRU = 0, POL_FIFO = 1, POL_LEAST_STALE = 2, POL_LFU = 3, POL_BELADY = 4, POL_LFU_COUNTS = 5,
       POL_SLRU = 6, POL_ARC = 7, POL_LRU_DS = 8, POL_MOE_INFINITY = 9, POL_RANDOM = 10, POL_END = 11 };
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
    int64_t policy;
    double param[4];                  /* the policy's parameters (its CompiledForm.kernel_params) */
    uint64_t *rng;                    /* n_partitions x 4: PCG64 state and increment (Random) */
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
    double *part_value;               /* n_partitions x 3: ARC's p, adapted, pending; the current layer */
    double *obj_value;                /* n_objects: moe-infinity's counts */
    uint8_t *obj_flag;                /* n_objects: moe-infinity: the object has a count */
    int64_t error_index;              /* the access an ERR_OBJECT was found at */
} replay_t;

typedef struct {
    replay_t *r;
    int64_t pol;         /* r->policy, or POL_LFU_COUNTS */
    int64_t pass;
    int64_t unit_id;     /* stamp of the protection unit being served */
    int64_t *guard;      /* guard[obj] == unit_id: obj belongs to the unit being served */
    /* lists: queue q of partition p is Q(p, q) = 4p + q */
    int32_t *prev, *next, *head, *tail;
    int64_t *cur_pass;   /* Least-Stale: the pass in which obj joined the current queue */
    /* heaps (LFU, Belady, moe-infinity per layer; Random's item lists): group g owns
       heap[hbase[g] .. hbase[g] + hsize[g]) */
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
    int64_t n_layers, n_groups;
    int8_t *where;       /* SLRU, ARC: the list obj is in (-1 none) */
    int64_t *llen, *lbytes;  /* per list: objects and bytes */
    double *arc_p;       /* per partition: ARC's target size of T1 */
    int64_t *adapted, *pending, *current;  /* per partition (ARC; lru-ds and moe-infinity) */
    double *count;       /* moe-infinity: per object, kept across evictions */
    uint8_t *has_count;
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

#include "structures.c"
#include "policy_hooks.c"

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
static int make_room(kern_t *k, int64_t p, int32_t obj, int64_t size, int64_t req) {
    replay_t *r = k->r;
    int64_t cap = r->capacity[p];
    if (r->used[p] + size <= cap) return 1;
    if (size > cap) return 0;
    policy_admit(k, p, obj, req);
    /* Belady.admit arms the bypass test for the first victim only */
    int pending = req >= 0 && r->policy == POL_BELADY && r->param[0] != 0.0;
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
    if (!make_room(k, p, obj, size, req)) {
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

/* Check the offsets (ERR_LAYOUT, error_index = the pass or cell) before anything is indexed with them. */
static int check_layout(replay_t *r) {
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
    return OK;
}

/* Check every access's object id in cells [c_lo, c_hi) (ERR_OBJECT, error_index = the access);
   the offsets must have passed check_layout. */
static int check_cell_objects(replay_t *r, int64_t c_lo, int64_t c_hi) {
    for (int64_t c = c_lo; c < c_hi; c++) {
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

static int check_objects(replay_t *r) {
    int rc = check_layout(r);
    return rc != OK ? rc : check_cell_objects(r, 0, r->n_cells);
}

/* The event-mode request stream (moesim.sim.requests) of cells [c_lo, c_hi): every cell's distinct
   objects in order of first appearance, requests numbered from 0 at c_lo. Fills, where not NULL,
   each request's object, cell and routed accesses (those arrays hold one entry per request: size
   them with a first call that fills only req_cell_offsets), every access's request (one entry per
   access of those cells) and the requests' cell offsets (c_hi - c_lo + 1 entries). Memory beside
   the outputs: two arrays of n_objects. Returns the number of requests, or a negative error. */
int64_t moesim_event_stream(replay_t *r, int64_t c_lo, int64_t c_hi, int32_t *req_obj, int32_t *req_cell,
                            int32_t *req_accesses, int64_t *access_request, int64_t *req_cell_offsets) {
    int rc = check_layout(r);
    if (rc == OK && (c_lo < 0 || c_hi > r->n_cells || c_lo > c_hi)) {
        r->error_index = -1;
        rc = ERR_LAYOUT;
    }
    if (rc == OK) rc = check_cell_objects(r, c_lo, c_hi);
    if (rc != OK) return rc;
    size_t n_obj = (size_t)(r->n_objects > 0 ? r->n_objects : 1);
    int need_slot = access_request || req_accesses;
    int64_t *mark = malloc(sizeof(int64_t) * n_obj);
    int64_t *slot = need_slot ? malloc(sizeof(int64_t) * n_obj) : NULL;
    if (!mark || (need_slot && !slot)) {
        free(mark);
        free(slot);
        return ERR_NOMEM;
    }
    for (int64_t o = 0; o < r->n_objects; o++) mark[o] = -1;
    int64_t n = 0, first_access = r->cell_offsets[c_lo];
    if (req_cell_offsets) req_cell_offsets[0] = 0;
    for (int64_t c = c_lo; c < c_hi; c++) {
        int64_t base = load_index(r->cell_layer, r->layer_is_int32, c) * r->n_experts;
        for (int64_t a = r->cell_offsets[c]; a < r->cell_offsets[c + 1]; a++) {
            int64_t obj = base + load_index(r->expert, r->expert_is_int32, a);
            if (mark[obj] != c) {
                mark[obj] = c;
                if (slot) slot[obj] = n;
                if (req_obj) req_obj[n] = (int32_t)obj;
                if (req_cell) req_cell[n] = (int32_t)c;
                if (req_accesses) req_accesses[n] = 0;
                n++;
            }
            if (req_accesses) req_accesses[slot[obj]]++;
            if (access_request) access_request[a - first_access] = slot[obj];
        }
        if (req_cell_offsets) req_cell_offsets[c - c_lo + 1] = n;
    }
    free(mark);
    free(slot);
    return n;
}

/* The number of event-mode requests, and their cell offsets when req_cell_offsets is not NULL. */
int64_t moesim_event_requests(replay_t *r, int64_t *req_cell_offsets) {
    return moesim_event_stream(r, 0, r->n_cells, NULL, NULL, NULL, NULL, req_cell_offsets);
}

#define ALLOC(ptr, n)                                                    \
    do {                                                                 \
        (ptr) = malloc(sizeof(*(ptr)) * (size_t)((n) > 0 ? (n) : 1));   \
        if (!(ptr)) goto nomem;                                          \
    } while (0)

/* Allocate and initialise the kernel's policy state for r (fresh policies: nothing tracked).
   On failure everything allocated is freed by kern_close. */
static int valid_policy(int64_t code) { return code >= 0 && code < POL_END && code != POL_LFU_COUNTS; }

static int kern_open(kern_t *k, replay_t *r) {
    memset(k, 0, sizeof(*k));
    k->r = r;
    k->pass = -1;
    if (!valid_policy(r->policy)) return ERR_POLICY;
    int64_t n = r->n_objects, np = r->n_partitions, pol = r->policy;
    k->pol = pol == POL_LFU && r->param[0] == 1.0 ? POL_LFU_COUNTS : pol;
    k->n_layers = r->n_experts > 0 ? (n + r->n_experts - 1) / r->n_experts : 1;
    if (k->n_layers < 1) k->n_layers = 1;
    int lists = pol <= POL_LEAST_STALE || pol == POL_SLRU || pol == POL_ARC || pol == POL_LRU_DS
                || k->pol == POL_LFU_COUNTS;
    ALLOC(k->guard, n);
    ALLOC(k->miss_req, n);
    ALLOC(k->miss_obj, n);
    for (int64_t o = 0; o < n; o++) k->guard[o] = -1;
    if (lists) {
        ALLOC(k->prev, n);
        ALLOC(k->next, n);
        ALLOC(k->head, 4 * np);
        ALLOC(k->tail, 4 * np);
        ALLOC(k->cur_pass, n);
        for (int64_t q = 0; q < 4 * np; q++) k->head[q] = k->tail[q] = -1;
        for (int64_t o = 0; o < n; o++) k->cur_pass[o] = INT64_MIN;
    }
    if (pol == POL_SLRU || pol == POL_ARC) {
        ALLOC(k->where, n);
        ALLOC(k->llen, 4 * np);
        ALLOC(k->lbytes, 4 * np);
        for (int64_t o = 0; o < n; o++) k->where[o] = -1;
        for (int64_t q = 0; q < 4 * np; q++) k->llen[q] = k->lbytes[q] = 0;
    }
    if (pol == POL_ARC) {
        ALLOC(k->arc_p, np);
        ALLOC(k->adapted, np);
        ALLOC(k->pending, np);
        for (int64_t p = 0; p < np; p++) {
            k->arc_p[p] = 0.0;
            k->adapted[p] = k->pending[p] = -1;
        }
    }
    if (pol == POL_LRU_DS || pol == POL_MOE_INFINITY) {
        ALLOC(k->current, np);
        for (int64_t p = 0; p < np; p++) k->current[p] = 0;
    }
    if (pol == POL_LRU_DS) {
        ALLOC(k->stamp, n);
        for (int64_t o = 0; o < n; o++) k->stamp[o] = 0;
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
    } else if (!lists) {  /* LFU with decay, Belady, moe-infinity (a heap per layer), Random */
        int64_t ng = pol == POL_MOE_INFINITY ? k->n_layers : np;
        k->n_groups = ng;
        ALLOC(k->heap, n);
        ALLOC(k->hbase, ng);
        ALLOC(k->hsize, ng);
        ALLOC(k->pos, n);
        ALLOC(k->key, n);
        ALLOC(k->stamp, n);
        ALLOC(k->aux, n + 2);
        for (int64_t g = 0; g < ng; g++) k->hbase[g] = k->hsize[g] = 0;
        for (int64_t o = 0; o < n; o++) {
            k->pos[o] = -1;
            k->key[o] = 0.0;
            k->stamp[o] = 0;
            k->hbase[group_of(k, r->partition_of[o], o)]++;  /* objects per group, summed below */
        }
        for (int64_t g = 0, start = 0; g < ng; g++) {
            int64_t count = k->hbase[g];
            k->hbase[g] = start;
            start += count;
        }
    }
    if (pol == POL_MOE_INFINITY) {
        ALLOC(k->count, n);
        ALLOC(k->has_count, n);
        for (int64_t o = 0; o < n; o++) {
            k->count[o] = 0.0;
            k->has_count[o] = 0;
        }
    }
    if (pol == POL_RANDOM && !r->rng) return ERR_POLICY;
    k->unit = 1.0;
    k->growth = (pol == POL_LFU || pol == POL_MOE_INFINITY) ? 1.0 / r->param[0] : 1.0;
    if (pol == POL_BELADY) {
        ALLOC(k->next_req, r->n_requests);
        return fill_next_requests(k);
    }
    return OK;
nomem:
    return ERR_NOMEM;
}

static void kern_close(kern_t *k) {
    void *owned[] = {k->guard, k->miss_req, k->miss_obj, k->prev, k->next, k->head, k->tail, k->cur_pass,
                     k->heap, k->hbase, k->hsize, k->pos, k->key, k->stamp, k->aux, k->next_req, k->bucket_of,
                     k->b_prev, k->b_next, k->b_head, k->b_tail, k->b_count, k->b_first, k->evict_log,
                     k->where, k->llen, k->lbytes, k->arc_p, k->adapted, k->pending, k->current, k->count,
                     k->has_count};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) free(owned[i]);
    memset(k, 0, sizeof(*k));
}

/* The planner's part of a cell (plan.c; a count replay passes NULL and never calls them). */
struct plan_s;
static int plan_hit(struct plan_s *pl, int32_t obj);
static int plan_admitted(struct plan_s *pl, kern_t *k, int64_t c, int32_t obj, int ok);

/* One event-mode cell, the driver both the count replay and the planner (plan.c) run: classify
   every distinct object of cell c (requests from *req on), then admit the misses in order.
   With `pl`, a hit on an object whose copy no cell waited for yet becomes a wait, and every
   admitted (or bypassed) miss becomes a copy with its victims. Returns OK or an error. */
static inline int serve_cell(kern_t *k, struct plan_s *pl, int64_t c, int64_t *req) {
    replay_t *r = k->r;
    int64_t lo = r->cell_offsets[c], hi = r->cell_offsets[c + 1];
    int64_t base = load_index(r->cell_layer, r->layer_is_int32, c) * r->n_experts;
    int64_t misses = 0, unit = ++k->unit_id, next = *req;
    for (int64_t a = lo; a < hi; a++) {
        int32_t obj = (int32_t)(base + load_index(r->expert, r->expert_is_int32, a));
        if (k->guard[obj] == unit) continue;  /* a repeat inside the cell: the same request */
        k->guard[obj] = unit;
        if (next >= r->n_requests) return ERR_REQUESTS;
        if (classify(k, next, obj)) {
            k->miss_req[misses] = next;
            k->miss_obj[misses] = obj;
            misses++;
        } else if (pl) {
            int rc = plan_hit(pl, obj);
            if (rc != OK) return rc;
        }
        next++;
    }
    *req = next;
    for (int64_t m = 0; m < misses; m++) {
        int32_t obj = (int32_t)k->miss_obj[m];
        k->n_log = 0;
        int ok = admit(k, k->miss_req[m], obj);
        if (k->error) return (int)k->error;
        if (pl) {
            int rc = plan_admitted(pl, k, c, obj, ok);
            if (rc != OK) return rc;
        }
    }
    return OK;
}

/* The whole replay. The core's arrays must hold its state after pins were installed, with no
   object in flight; clock[] the policies' clocks (0 for fresh ones). Returns 0 or an error. */
int64_t moesim_count_replay(replay_t *r) {
    kern_t kk;
    kern_t *k = &kk;
    memset(k, 0, sizeof(kk));
    if (!valid_policy(r->policy)) return ERR_POLICY;
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
            if ((rc = serve_cell(k, NULL, c, &req)) != OK) goto done;
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
int64_t moesim_abi_version(void) { return 3; }
int64_t moesim_replay_struct_size(void) { return (int64_t)sizeof(replay_t); }
