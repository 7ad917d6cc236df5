/*
 * The ordered structures the policies are built from, over object ids (int32) in flat arrays:
 * doubly linked lists, indexed min-heaps on (key, stamp) with a best-first search for the first
 * eligible entry, and LFU's frequency buckets. Included by replay.c after kern_t.
 */

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
