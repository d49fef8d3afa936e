/* priority.c - per-region write priority: the policing state machine.
 *
 * The agreed table of priority.h (an owner and a FIFO of waiting nodes per
 * region) and this node's own bookkeeping for the same region (writes that
 * pin it, writes waiting for it, a request or release of ours still on the
 * wire) live in one entry of one open-addressing hash table, so a single
 * lookup answers both "may I write here" and "must I let go". An entry
 * exists only while one of its two halves holds something, so memory
 * follows the regions in use, not the size of the volumes.
 *
 * The output is a pure function of the calls made, in order: no clock, no
 * I/O, no lock (the caller serialises every call), no global state. Every
 * node that applied the same agreed events holds the same shared half, and
 * tests/unit/test_priority_sim.c replays any schedule from its seed.
 *
 * Why two nodes that want one region alternate instead of livelocking:
 * when a region is granted to this node, as many writes as were waiting for
 * it then may still start after another node has queued (the allowance);
 * beyond those, writes are held back. So each grant serves the writes it
 * was asked for (the caller retries them on POL_WAKE), and the release
 * that follows hands the region on. Writes that were held back ask again
 * right behind the RELEASE (CPG keeps one sender's messages in order), so
 * this node queues after the one it yielded to.
 */
#include "policing/priority.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct region {
    struct pol_key key;
    /* Shared half: equal on every node that applied the same events. */
    pol_node_t owner;  /* 0: nobody, and then the queue is empty */
    pol_node_t *queue; /* waiting nodes in agreed order; never the owner */
    uint32_t nq, qcap;
    /* Local half: this node only. */
    uint32_t pins;      /* writes holding this region (in flight or pinned) */
    uint32_t waiting;   /* writes whose next region to take is this one */
    uint32_t allowance; /* writes that may still start although another
                         * node waits: those waiting at the grant, never
                         * more than are still waiting */
    bool asked;         /* our REQUEST is out and we don't own the region */
    bool releasing;     /* our RELEASE is out and not yet applied */
};

struct pol {
    pol_node_t self;
    struct region **slot; /* linear probing; NULL is a free slot */
    size_t cap;           /* a power of two, at least MIN_CAP */
    size_t n;             /* entries in use */
};

#define MIN_CAP 16

/* Snapshot encoding, all integers little endian:
 *   u32 magic "VPOL", u32 version, u32 entry count, then per entry
 *   u32 volume, u64 region, u32 owner, u32 waiter count, u32 waiters[].
 * Entries are sorted by (volume, region), so equal tables give equal
 * bytes. Regions without an owner are not stored (they have no queue). */
#define SNAP_MAGIC 0x4c4f5056u /* the bytes 'V' 'P' 'O' 'L' */
#define SNAP_VERSION 1u
#define SNAP_HEADER 12u
#define SNAP_ENTRY 20u /* an entry without waiters */

/* ---- memory ------------------------------------------------------------ */

/* The table is bounded by the regions in use; running out of memory for it
 * leaves no consistent way on (the node would diverge from the agreed
 * table), so it aborts, as priority.h promises. */
static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        abort();
    return q;
}

static void *xcalloc(size_t n, size_t size)
{
    void *q = calloc(n, size);
    if (q == NULL)
        abort();
    return q;
}

void pol_actions_free(struct pol_actions *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

static void emit(struct pol_actions *out, enum pol_action_kind kind, struct pol_key k,
                 pol_node_t node)
{
    if (out->n == out->cap) {
        out->cap = out->cap ? 2 * out->cap : 8;
        out->v = xrealloc(out->v, out->cap * sizeof(*out->v));
    }
    out->v[out->n++] = (struct pol_action){.kind = kind, .key = k, .node = node};
}

/* ---- the hash table ---------------------------------------------------- */

static bool key_eq(struct pol_key a, struct pol_key b)
{
    return a.volume == b.volume && a.region == b.region;
}

static int key_cmp(struct pol_key a, struct pol_key b)
{
    if (a.volume != b.volume)
        return a.volume < b.volume ? -1 : 1;
    if (a.region != b.region)
        return a.region < b.region ? -1 : 1;
    return 0;
}

/* splitmix64's finaliser: neighbouring regions land far apart. */
static size_t key_hash(struct pol_key k)
{
    uint64_t x = k.region ^ ((uint64_t)k.volume << 40 | (uint64_t)k.volume >> 24);
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (size_t)(x ^ (x >> 31));
}

static bool region_idle(const struct region *r)
{
    return r->owner == 0 && r->nq == 0 && r->pins == 0 && r->waiting == 0 && !r->asked &&
           !r->releasing;
}

/* The slot holding k, or the free slot where k would go. */
static size_t find_slot(const struct pol *p, struct pol_key k)
{
    size_t mask = p->cap - 1;
    size_t i = key_hash(k) & mask;
    while (p->slot[i] != NULL && !key_eq(p->slot[i]->key, k))
        i = (i + 1) & mask;
    return i;
}

static struct region *lookup(const struct pol *p, struct pol_key k)
{
    return p->slot[find_slot(p, k)];
}

static void region_free(struct region *r)
{
    free(r->queue);
    free(r);
}

/* The smallest capacity that keeps the load at most one half. */
static size_t cap_for(size_t n)
{
    size_t cap = MIN_CAP;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

/* Moves every entry into a table of cap slots, dropping idle ones; this is
 * also how the bulk events (a leave, a deleted volume) sweep. */
static void rehash(struct pol *p, size_t cap)
{
    struct region **old = p->slot;
    size_t oldcap = p->cap;
    p->slot = xcalloc(cap, sizeof(*p->slot));
    p->cap = cap;
    p->n = 0;
    for (size_t i = 0; i < oldcap; i++) {
        struct region *r = old[i];
        if (r == NULL)
            continue;
        if (region_idle(r)) {
            region_free(r);
            continue;
        }
        p->slot[find_slot(p, r->key)] = r;
        p->n++;
    }
    free(old);
}

static void sweep(struct pol *p)
{
    size_t live = 0;
    for (size_t i = 0; i < p->cap; i++)
        if (p->slot[i] != NULL && !region_idle(p->slot[i]))
            live++;
    rehash(p, cap_for(live));
}

/* The entry for k, created empty if there is none. The pointer is valid
 * until the next call that may remove or add entries. */
static struct region *get(struct pol *p, struct pol_key k)
{
    size_t i = find_slot(p, k);
    if (p->slot[i] != NULL)
        return p->slot[i];
    if (2 * (p->n + 1) > p->cap) {
        rehash(p, 2 * p->cap);
        i = find_slot(p, k);
    }
    struct region *r = xcalloc(1, sizeof(*r));
    r->key = k;
    p->slot[i] = r;
    p->n++;
    return r;
}

/* Backward-shift deletion: entries after the hole that would no longer be
 * reachable from their home slot move into it, so no tombstones build up. */
static void remove_slot(struct pol *p, size_t hole)
{
    size_t mask = p->cap - 1;
    region_free(p->slot[hole]);
    p->slot[hole] = NULL;
    p->n--;
    for (size_t j = (hole + 1) & mask; p->slot[j] != NULL; j = (j + 1) & mask) {
        size_t home = key_hash(p->slot[j]->key) & mask;
        /* Stays if its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        p->slot[hole] = p->slot[j];
        p->slot[j] = NULL;
        hole = j;
    }
    if (p->cap > MIN_CAP && 8 * p->n < p->cap)
        rehash(p, p->cap / 2);
}

static void drop_if_idle(struct pol *p, struct region *r)
{
    if (region_idle(r))
        remove_slot(p, find_slot(p, r->key));
}

/* ---- the queue ---------------------------------------------------------- */

static bool queue_has(const struct region *r, pol_node_t node)
{
    for (uint32_t i = 0; i < r->nq; i++)
        if (r->queue[i] == node)
            return true;
    return false;
}

static void queue_push(struct region *r, pol_node_t node)
{
    if (r->nq == r->qcap) {
        r->qcap = r->qcap ? 2 * r->qcap : 4;
        r->queue = xrealloc(r->queue, r->qcap * sizeof(*r->queue));
    }
    r->queue[r->nq++] = node;
}

static bool queue_remove(struct region *r, pol_node_t node)
{
    for (uint32_t i = 0; i < r->nq; i++) {
        if (r->queue[i] != node)
            continue;
        memmove(&r->queue[i], &r->queue[i + 1], (r->nq - i - 1) * sizeof(*r->queue));
        r->nq--;
        return true;
    }
    return false;
}

/* The owner steps down: the first waiter, if any, takes over. */
static void pass_on(struct region *r)
{
    if (r->nq == 0) {
        r->owner = 0;
        return;
    }
    r->owner = r->queue[0];
    queue_remove(r, r->owner);
}

/* ---- rules --------------------------------------------------------------- */

static bool owns(const struct pol *p, const struct region *r)
{
    return r->owner == p->self && !r->releasing;
}

/* Releases r once nothing of ours still needs it: another node waits, no
 * write pins it, and the writes this grant was for have started. Writes
 * still waiting ask again right behind the RELEASE. */
static void maybe_release(struct pol *p, struct region *r, struct pol_actions *out)
{
    if (!owns(p, r) || r->nq == 0 || r->pins > 0 || r->allowance > 0)
        return;
    r->releasing = true;
    emit(out, POL_SEND_RELEASE, r->key, 0);
    if (r->waiting > 0 && !r->asked) {
        r->asked = true;
        emit(out, POL_SEND_REQUEST, r->key, 0);
    }
}

/* r has just become ours in the agreed table. */
static void granted(struct pol *p, struct region *r, struct pol_actions *out)
{
    r->asked = false;
    r->allowance = r->waiting;
    if (r->waiting > 0)
        emit(out, POL_WAKE, r->key, 0);
    else
        maybe_release(p, r, out);
}

/* A write stops waiting for r (it started, gave up or ended). */
static void unwait(struct region *r)
{
    r->waiting--;
    if (r->allowance > r->waiting)
        r->allowance = r->waiting;
}

/* ---- agreed events ------------------------------------------------------- */

void pol_on_request(struct pol *p, struct pol_key k, pol_node_t from, struct pol_actions *out)
{
    if (from == 0)
        return;
    struct region *r = lookup(p, k);
    if (r != NULL && (r->owner == from || queue_has(r, from))) {
        if (from == p->self)
            r->asked = r->owner != p->self;
        return;
    }
    r = get(p, k);
    if (r->owner == 0) {
        r->owner = from;
        if (from == p->self)
            granted(p, r, out);
        return;
    }
    queue_push(r, from);
    if (from == p->self)
        r->asked = true;
    else
        maybe_release(p, r, out);
}

void pol_on_release(struct pol *p, struct pol_key k, pol_node_t from, struct pol_actions *out)
{
    struct region *r = lookup(p, k);
    if (r == NULL || from == 0)
        return;
    if (from == p->self)
        r->releasing = false;
    if (r->owner == from) {
        pass_on(r);
        if (r->owner == p->self)
            granted(p, r, out);
    }
    drop_if_idle(p, r);
}

/* One region as member gone leaves: out of the queue, and if it owned the
 * region, the first waiter takes over (reported as lost first, so the
 * caller reconciles before it lets the woken writes run). */
static void leave_region(struct pol *p, struct region *r, pol_node_t gone, struct pol_actions *out)
{
    bool was_queued = queue_remove(r, gone);
    if (gone == p->self) {
        r->asked = r->releasing = false;
        r->allowance = 0;
    }
    if (r->owner == gone) {
        pass_on(r);
        emit(out, POL_LOST, r->key, gone);
        if (r->owner == p->self)
            granted(p, r, out);
    } else if (was_queued && owns(p, r) && r->nq == 0 && r->waiting > 0) {
        /* The contention that held these writes back is gone. */
        emit(out, POL_WAKE, r->key, 0);
    }
}

void pol_on_leave(struct pol *p, pol_node_t gone, struct pol_actions *out)
{
    if (gone == 0)
        return;
    for (size_t i = 0; i < p->cap; i++)
        if (p->slot[i] != NULL)
            leave_region(p, p->slot[i], gone, out);
    sweep(p);
}

void pol_on_volume_gone(struct pol *p, uint32_t volume, struct pol_actions *out)
{
    (void)out;
    for (size_t i = 0; i < p->cap; i++) {
        struct region *r = p->slot[i];
        if (r == NULL || r->key.volume != volume)
            continue;
        r->owner = 0;
        r->nq = r->pins = r->waiting = r->allowance = 0;
        r->asked = r->releasing = false;
    }
    sweep(p);
}

/* ---- local events -------------------------------------------------------- */

/* Whether a write may take r now: ours, and nobody else waits or this
 * grant still allows a write to start. */
static bool may_take(const struct pol *p, const struct region *r)
{
    return owns(p, r) && (r->nq == 0 || r->allowance > 0);
}

bool pol_write_begin(struct pol *p, struct pol_write *w, struct pol_actions *out)
{
    assert(w->first <= w->last && w->last < UINT64_MAX);
    if (w->held < w->first)
        w->held = w->first;
    while (w->held <= w->last) {
        struct region *r = get(p, (struct pol_key){w->volume, w->held});
        if (!may_take(p, r)) {
            if (!w->waiting) {
                w->waiting = true;
                r->waiting++;
            }
            /* An owner held back by contention asks when it releases. */
            if (!owns(p, r) && !r->asked) {
                r->asked = true;
                emit(out, POL_SEND_REQUEST, r->key, 0);
            }
            return false;
        }
        if (r->nq > 0)
            r->allowance--;
        if (w->waiting) {
            w->waiting = false;
            unwait(r);
        }
        r->pins++;
        w->held++;
    }
    return true;
}

/* Ending and giving up are the same to the table: unpin what w holds and
 * stop waiting; each region let go may now be due for release. Regions of
 * a deleted volume are gone already, which makes this a no-op for them. */
static void forget(struct pol *p, struct pol_write *w, struct pol_actions *out)
{
    for (uint64_t reg = w->first; reg < w->held; reg++) {
        struct region *r = lookup(p, (struct pol_key){w->volume, reg});
        if (r == NULL || r->pins == 0)
            continue;
        r->pins--;
        maybe_release(p, r, out);
        drop_if_idle(p, r);
    }
    if (w->waiting && w->held <= w->last) {
        struct region *r = lookup(p, (struct pol_key){w->volume, w->held});
        if (r != NULL && r->waiting > 0) {
            unwait(r);
            maybe_release(p, r, out);
            drop_if_idle(p, r);
        }
    }
    w->waiting = false;
    w->held = w->first;
}

void pol_write_end(struct pol *p, struct pol_write *w, struct pol_actions *out)
{
    forget(p, w, out);
}

void pol_write_cancel(struct pol *p, struct pol_write *w, struct pol_actions *out)
{
    forget(p, w, out);
}

/* ---- life and queries ---------------------------------------------------- */

struct pol *pol_new(pol_node_t self)
{
    if (self == 0) {
        errno = EINVAL;
        return NULL;
    }
    struct pol *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->slot = calloc(MIN_CAP, sizeof(*p->slot));
    if (p->slot == NULL) {
        free(p);
        return NULL;
    }
    p->self = self;
    p->cap = MIN_CAP;
    return p;
}

void pol_free(struct pol *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->cap; i++)
        if (p->slot[i] != NULL)
            region_free(p->slot[i]);
    free(p->slot);
    free(p);
}

pol_node_t pol_owner(const struct pol *p, struct pol_key k)
{
    const struct region *r = lookup(p, k);
    return r ? r->owner : 0;
}

size_t pol_waiters(const struct pol *p, struct pol_key k, pol_node_t *out, size_t max)
{
    const struct region *r = lookup(p, k);
    if (r == NULL)
        return 0;
    for (size_t i = 0; i < r->nq && i < max; i++)
        out[i] = r->queue[i];
    return r->nq;
}

size_t pol_regions(const struct pol *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->cap; i++)
        if (p->slot[i] != NULL && p->slot[i]->owner != 0)
            n++;
    return n;
}

/* ---- state transfer ------------------------------------------------------ */

static uint8_t *put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return b + 4;
}

static uint8_t *put64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return b + 8;
}

static uint32_t get32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get64(const uint8_t *b)
{
    return (uint64_t)get32(b) | (uint64_t)get32(b + 4) << 32;
}

static int region_ptr_cmp(const void *a, const void *b)
{
    const struct region *x = *(struct region *const *)a, *y = *(struct region *const *)b;
    return key_cmp(x->key, y->key);
}

int pol_snapshot(const struct pol *p, void **buf, size_t *len)
{
    size_t n = pol_regions(p);
    struct region **owned = malloc((n ? n : 1) * sizeof(*owned));
    if (owned == NULL)
        return -ENOMEM;
    size_t size = SNAP_HEADER, j = 0;
    for (size_t i = 0; i < p->cap; i++) {
        struct region *r = p->slot[i];
        if (r == NULL || r->owner == 0)
            continue;
        owned[j++] = r;
        size += SNAP_ENTRY + 4 * (size_t)r->nq;
    }
    qsort(owned, n, sizeof(*owned), region_ptr_cmp);
    uint8_t *b = malloc(size);
    if (b == NULL) {
        free(owned);
        return -ENOMEM;
    }
    uint8_t *at = put32(put32(put32(b, SNAP_MAGIC), SNAP_VERSION), (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const struct region *r = owned[i];
        at = put32(put64(put32(at, r->key.volume), r->key.region), r->owner);
        at = put32(at, r->nq);
        for (uint32_t q = 0; q < r->nq; q++)
            at = put32(at, r->queue[q]);
    }
    free(owned);
    *buf = b;
    *len = size;
    return 0;
}

/* One decoded snapshot entry; its waiters stay in the buffer. */
struct snap_entry {
    struct pol_key key;
    pol_node_t owner;
    uint32_t nq;
    const uint8_t *waiters;
};

static int snap_entry_cmp(const void *a, const void *b)
{
    return key_cmp(((const struct snap_entry *)a)->key, ((const struct snap_entry *)b)->key);
}

static int node_cmp(const void *a, const void *b)
{
    pol_node_t x = *(const pol_node_t *)a, y = *(const pol_node_t *)b;
    return x < y ? -1 : x > y;
}

/* A queue is valid when its nodes are real, distinct and not the owner;
 * scratch has room for e->nq nodes. */
static bool queue_valid(const struct snap_entry *e, pol_node_t *scratch)
{
    for (uint32_t i = 0; i < e->nq; i++) {
        scratch[i] = get32(e->waiters + 4 * (size_t)i);
        if (scratch[i] == 0 || scratch[i] == e->owner)
            return false;
    }
    qsort(scratch, e->nq, sizeof(*scratch), node_cmp);
    for (uint32_t i = 1; i < e->nq; i++)
        if (scratch[i] == scratch[i - 1])
            return false;
    return true;
}

/* Decodes and checks every entry of a snapshot of len bytes at b into ent
 * (room for count entries). Returns 0 or -EINVAL. */
static int snap_decode(const uint8_t *b, size_t len, uint32_t count, struct snap_entry *ent,
                       pol_node_t *scratch)
{
    size_t at = SNAP_HEADER;
    for (uint32_t i = 0; i < count; i++) {
        if (len - at < SNAP_ENTRY)
            return -EINVAL;
        struct snap_entry *e = &ent[i];
        e->key.volume = get32(b + at);
        e->key.region = get64(b + at + 4);
        e->owner = get32(b + at + 12);
        e->nq = get32(b + at + 16);
        at += SNAP_ENTRY;
        if (e->owner == 0 || e->nq > (len - at) / 4)
            return -EINVAL;
        e->waiters = b + at;
        at += 4 * (size_t)e->nq;
        if (!queue_valid(e, scratch))
            return -EINVAL;
    }
    if (at != len)
        return -EINVAL;
    qsort(ent, count, sizeof(*ent), snap_entry_cmp);
    for (uint32_t i = 1; i < count; i++)
        if (key_eq(ent[i].key, ent[i - 1].key))
            return -EINVAL;
    return 0;
}

/* Replaces the shared half by the decoded entries; cannot fail. */
static void snap_apply(struct pol *p, const struct snap_entry *ent, uint32_t count)
{
    for (size_t i = 0; i < p->cap; i++) {
        struct region *r = p->slot[i];
        if (r != NULL) {
            r->owner = 0;
            r->nq = 0;
        }
    }
    for (uint32_t i = 0; i < count; i++) {
        struct region *r = get(p, ent[i].key);
        r->owner = ent[i].owner;
        for (uint32_t q = 0; q < ent[i].nq; q++)
            queue_push(r, get32(ent[i].waiters + 4 * (size_t)q));
    }
    sweep(p);
}

/* After a restore, the local half catches up with what the snapshot says
 * happened while this node held the events back (the sync round): a
 * region granted to us is granted here too (its waiting writes wake), one
 * we own that others now wait for is released if no write needs it, and a
 * RELEASE of ours that was applied is no longer out. Without this, a
 * region granted or asked for during a round stays with a node that does
 * not know it owes it to anyone. */
static void catch_up(struct pol *p, struct pol_actions *out)
{
    for (size_t i = 0; i < p->cap; i++) {
        struct region *r = p->slot[i];
        if (r == NULL)
            continue;
        if (r->owner != p->self) {
            r->releasing = false;
            continue;
        }
        /* Ours, and our RELEASE is still to come: it may not even have
         * been sent yet (the main loop's wait for the beat thread). Its
         * region is not ours to write (owns), or a write started now
         * would run on as the RELEASE hands the region on. */
        if (r->releasing)
            continue;
        if (r->asked)
            granted(p, r, out);
        else
            maybe_release(p, r, out);
    }
}

int pol_restore(struct pol *p, const void *buf, size_t len, struct pol_actions *out)
{
    const uint8_t *b = buf;
    if (buf == NULL || len < SNAP_HEADER || get32(b) != SNAP_MAGIC || get32(b + 4) != SNAP_VERSION)
        return -EINVAL;
    uint32_t count = get32(b + 8);
    if (count > (len - SNAP_HEADER) / SNAP_ENTRY)
        return -EINVAL;
    struct snap_entry *ent = malloc((count ? count : 1) * sizeof(*ent));
    pol_node_t *scratch = malloc((len / 4) * sizeof(*scratch));
    int r = ent && scratch ? snap_decode(b, len, count, ent, scratch) : -ENOMEM;
    if (r == 0) {
        snap_apply(p, ent, count);
        catch_up(p, out);
    }
    free(ent);
    free(scratch);
    return r;
}
