/*
 * moesim planner, compiled: the decisions of moesim.sim.plan.Planner (demand classification,
 * admission, copies with their victims, cancels and waits, prefetch admission) for the policies
 * replay.c implements, with miss handling "stall" and no DRAM cache tier.
 *
 * One translation unit: this file includes replay.c, whose cache core and policy hooks it drives
 * cell by cell instead of in one sweep, so that Python can ask the prefetch policy between a
 * cell's demand decisions and its prefetches. A planning run is open / run / prefetch / close:
 *   moesim_plan_run(pl, end, stop):  cells next_cell .. end - 1; with `stop`, also the demand
 *                                    part of cell `end` (the cell is then "open")
 *   moesim_plan_prefetch(pl, objs, n): the open cell's prefetch proposals (best first), then the
 *                                    cell's end
 * Where Planner._step keeps objects IN_FLIGHT until the cell's end, the kernel makes them
 * RESIDENT at once and protects them with the cell's guard: no other cell can see the difference
 * (every admitted object is filled before the next cell begins), and within the cell both mean
 * "present, not evictable". tests/perf/test_fast_plan.py compares every array of the Plan with the
 * Python planner's.
 */
#include "replay.c"

enum { ERR_FULL = -8, ERR_STATE = -9 };

/* Every field is 8 bytes wide (the ctypes mirror is PlanArgs in moesim/sim/fast/planner.py). */
typedef struct plan_s {
    replay_t r;                 /* trace, objects, policy, core state; outcomes/bypassed per request */
    const int64_t *cell_pass;   /* n_cells */
    uint8_t *prefetched_unused; /* n_objects, the core's */
    int64_t route;              /* of every copy (no DRAM tier: one route) */
    int64_t *inbound;           /* n_objects: last copy into VRAM, -1 none */
    uint8_t *unwaited;          /* n_objects: that copy has not been waited for by a cell */
    int64_t *orphans;           /* n_objects: evictions whose room no copy has taken yet */
    int64_t n_orphans;
    /* per-copy outputs; every array holds `cap` entries (offsets cap + 1) */
    int64_t cap, n_copies;
    int64_t *copy_obj, *copy_bytes, *copy_cell;
    uint8_t *copy_prefetch, *copy_resident;
    int64_t *victim_offsets, *victims, n_victims;
    int64_t *cancel_offsets, *cancels, n_cancels;
    int64_t *waits, n_waits;
    /* per-cell outputs (n_cells + 1) */
    int64_t *cell_copy_offsets, *wait_offsets;
    /* progress and counters */
    int64_t next_cell, next_req, open_cell;
    int64_t prefetch_useful, prefetch_wasted, prefetch_issued, prefetch_bytes;
    void *kern;
} plan_t;

/* Planner._issue for one object: the copy; for a resident one also its victims (orphans first),
   the cancels of copies into those victims' slots that no cell waited for, and its inbound copy. */
static int add_copy(plan_t *pl, int32_t obj, int64_t cell, int prefetch, int resident, const int64_t *log,
                    int64_t n_log) {
    int64_t c = pl->n_copies;
    if (c >= pl->cap) return ERR_FULL;
    for (int pass = resident ? 0 : 2; pass < 2; pass++) {
        const int64_t *vs = pass == 0 ? pl->orphans : log;
        int64_t nv = pass == 0 ? pl->n_orphans : n_log;
        for (int64_t i = 0; i < nv; i++) {
            int64_t v = vs[i];
            if (pl->n_victims >= pl->cap || pl->n_cancels >= pl->cap) return ERR_FULL;
            pl->victims[pl->n_victims++] = v;
            if (pl->unwaited[v]) {
                pl->cancels[pl->n_cancels++] = pl->inbound[v];
                pl->unwaited[v] = 0;
            }
            pl->inbound[v] = -1;
        }
    }
    if (resident) pl->n_orphans = 0;
    pl->copy_obj[c] = obj;
    pl->copy_bytes[c] = pl->r.object_bytes[obj];
    pl->copy_cell[c] = cell;
    pl->copy_prefetch[c] = (uint8_t)prefetch;
    pl->copy_resident[c] = (uint8_t)resident;
    pl->victim_offsets[c + 1] = pl->n_victims;
    pl->cancel_offsets[c + 1] = pl->n_cancels;
    if (resident) {
        pl->inbound[obj] = c;
        pl->unwaited[obj] = (uint8_t)prefetch;
    }
    pl->n_copies = c + 1;
    return OK;
}

static void keep_orphans(plan_t *pl, kern_t *k) {
    for (int64_t i = 0; i < k->n_log; i++) pl->orphans[pl->n_orphans++] = k->evict_log[i];
}

/* A hit on an object whose copy no cell has waited for yet: this cell waits for it. */
static int plan_hit(plan_t *pl, int32_t obj) {
    if (!pl->unwaited[obj]) return OK;
    if (pl->n_waits >= pl->cap) return ERR_FULL;
    pl->waits[pl->n_waits++] = pl->inbound[obj];
    pl->unwaited[obj] = 0;
    return OK;
}

/* A demand miss admitted (ok) or bypassed: its copy, with the victims of its admission, and the wait. */
static int plan_admitted(plan_t *pl, kern_t *k, int64_t c, int32_t obj, int ok) {
    int rc;
    if (ok) {
        rc = add_copy(pl, obj, c, 0, 1, k->evict_log, k->n_log);
    } else {
        keep_orphans(pl, k);  /* a bypassed miss streams through a buffer; its victims' room stays free */
        rc = add_copy(pl, obj, c, 0, 0, NULL, 0);
    }
    if (rc != OK) return rc;
    if (pl->n_waits >= pl->cap) return ERR_FULL;
    pl->waits[pl->n_waits++] = pl->n_copies - 1;
    return OK;
}

/* Planner._step up to the prefetch proposals: the count replay's cell driver with the plan's part. */
static int cell_demand(plan_t *pl, kern_t *k, int64_t c) {
    int64_t pass = pl->cell_pass[c];
    while (k->pass < pass) pass_begin(k, k->pass + 1);  /* passes with no cells begin too, as in the count replay */
    return serve_cell(k, pl, c, &pl->next_req);
}

static void cell_end(plan_t *pl, int64_t c) {
    pl->cell_copy_offsets[c + 1] = pl->n_copies;
    pl->wait_offsets[c + 1] = pl->n_waits;
    pl->next_cell = c + 1;
}

static void sync_counters(plan_t *pl, kern_t *k) {
    pl->prefetch_useful = k->prefetch_useful;
    pl->prefetch_wasted = k->prefetch_wasted;
}

int64_t moesim_plan_open(plan_t *pl) {
    replay_t *r = &pl->r;
    if (pl->kern) return ERR_STATE;
    if (r->sequential) return ERR_POLICY;
    int rc = check_objects(r);
    if (rc != OK) return rc;
    for (int64_t c = 0; c < r->n_cells; c++)
        if (pl->cell_pass[c] < 0) return ERR_LAYOUT;
    kern_t *k = calloc(1, sizeof(kern_t));
    if (!k) return ERR_NOMEM;
    rc = kern_open(k, r);
    if (rc == OK) {
        k->evict_log = malloc(sizeof(int64_t) * (size_t)(r->n_objects > 0 ? r->n_objects : 1));
        if (!k->evict_log) rc = ERR_NOMEM;
    }
    if (rc != OK) {
        kern_close(k);
        free(k);
        return rc;
    }
    k->prefetched_unused = pl->prefetched_unused;
    pl->kern = k;
    pl->open_cell = -1;
    return OK;
}

int64_t moesim_plan_run(plan_t *pl, int64_t end, int64_t stop) {
    kern_t *k = pl->kern;
    if (!k || pl->open_cell >= 0 || end > pl->r.n_cells || end < pl->next_cell) return ERR_STATE;
    int rc = OK;
    for (int64_t c = pl->next_cell; c < end; c++) {
        if ((rc = cell_demand(pl, k, c)) != OK) break;
        cell_end(pl, c);
    }
    if (rc == OK && stop && end < pl->r.n_cells) {
        rc = cell_demand(pl, k, end);
        pl->open_cell = end;
    }
    sync_counters(pl, k);
    return rc;
}

/* Planner._prefetch after propose(): protect the proposed objects already present, admit the
   absent ones in order (never evicting the cell's objects or another proposal), then end the cell. */
int64_t moesim_plan_prefetch(plan_t *pl, const int64_t *objs, int64_t n) {
    kern_t *k = pl->kern;
    replay_t *r = &pl->r;
    int64_t c = pl->open_cell;
    if (!k || c < 0) return ERR_STATE;
    if (r->policy == POL_BELADY && n > 0) return ERR_POLICY;  /* a prefetch has no next use by request */
    int64_t unit = k->unit_id;
    for (int64_t i = 0; i < n; i++) {
        if (objs[i] < 0 || objs[i] >= r->n_objects) return ERR_OBJECT;
        if (r->state[objs[i]] != ABSENT) k->guard[objs[i]] = unit;
    }
    for (int64_t i = 0; i < n; i++) {
        int32_t obj = (int32_t)objs[i];
        if (r->state[obj] != ABSENT) continue;  /* present, or proposed twice */
        int64_t p = r->partition_of[obj], size = r->object_bytes[obj];
        k->n_log = 0;
        int ok = make_room(k, p, obj, size, -1);
        if (k->error) return k->error;
        if (!ok) {
            keep_orphans(pl, k);
            continue;
        }
        r->used[p] += size;
        r->state[obj] = RESIDENT;
        on_insert(k, p, obj, -1);
        k->guard[obj] = unit;
        pl->prefetched_unused[obj] = 1;
        pl->prefetch_issued++;
        pl->prefetch_bytes += size;
        int rc = add_copy(pl, obj, c, 1, 1, k->evict_log, k->n_log);
        if (rc != OK) return rc;
    }
    cell_end(pl, c);
    pl->open_cell = -1;
    sync_counters(pl, k);
    return OK;
}

/* Export the policies' final state (replay_t's order_* arrays) and free the kernel. */
int64_t moesim_plan_close(plan_t *pl) {
    kern_t *k = pl->kern;
    if (!k) return ERR_STATE;
    int64_t rc = k->error;
    if (rc == OK) export_policy_state(k);
    sync_counters(pl, k);
    kern_close(k);
    free(k);
    pl->kern = NULL;
    return rc;
}

int64_t moesim_plan_struct_size(void) { return (int64_t)sizeof(plan_t); }
