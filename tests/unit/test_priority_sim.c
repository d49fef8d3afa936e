/* test_priority_sim.c - a deterministic simulator of the policing state
 * machine (policing/priority.c) on 2-5 nodes, checked against invariant 3
 * (one writer per region) and for liveness, over 10,000 random schedules.
 *
 * The model of CPG: one global agreed sequence of events (REQUEST and
 * RELEASE messages, members leaving and joining). Every node applies it in
 * the same order but at its own pace, through its own cursor, so nodes lag
 * each other as real ones do. A message a node sends goes to its outbox
 * first and enters the sequence at some later step (per-sender FIFO; what
 * is still in the outbox when the node crashes is lost, as CPG may lose
 * it). A crash ends the node and its writes at once and appends its leave.
 * A join appends a JOIN event at position P; the first live node to apply
 * it hands its pol_snapshot (its table after event P) to the newcomer,
 * which restores it and goes on from P + 1: that is how the protocol
 * transfers state.
 *
 * Checked at every step: no two live nodes have a write in flight on one
 * region at the same moment (real time, whatever their lags); every write
 * in flight or pinned region is owned in its node's own table; after each
 * event a node applies, its table equals the oracle's table for that
 * position (a plain transcription of the rules, so all nodes agree on
 * every prefix, in FIFO order); a leave reports exactly the departed
 * node's regions as lost; POL_WAKE names only regions the node owns. At
 * the end of a schedule, new writes, cancels, crashes and joins stop and
 * everything is delivered: every waiting write of a live node must start
 * and finish, and every queue must drain, within a bound of steps.
 *
 * A failing schedule prints its seed, the reason and the tail of a trace;
 * PRIORITY_SIM_SEED=N runs just seed N with the whole trace on stderr.
 * PRIORITY_SIM_FIRST and PRIORITY_SIM_COUNT move or widen the seed range.
 */
#include "policing/priority.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 5
#define WRITES_PER_NODE 4
#define VOLUMES 2
#define REGIONS 6
#define MAX_SPAN 3
#define KEYS (VOLUMES * REGIONS)
#define DRAIN_STEPS 50000
#define TRACE_LINES 80
#define TRACE_WIDTH 200
#define SCHEDULES 10000

enum ev_kind { EV_REQUEST, EV_RELEASE, EV_LEAVE, EV_JOIN };

static const char *const ev_name[] = {"REQUEST", "RELEASE", "LEAVE", "JOIN"};

struct event {
    enum ev_kind kind;
    pol_node_t node; /* the sender, or who leaves or joins */
    struct pol_key key;
};

/* The shared table as the rules define it, for every key of the model. */
struct table {
    uint8_t owner[KEYS];
    uint8_t nq[KEYS];
    uint8_t queue[KEYS][MAX_NODES];
};

enum wstate { W_FREE, W_WAITING, W_INFLIGHT };

struct swrite {
    enum wstate state;
    struct pol_write w;
    unsigned id;
    unsigned left; /* steps in flight still to go */
    bool woken;    /* a POL_WAKE for the region it waits on arrived */
};

struct node {
    bool live;      /* the process runs */
    bool joined;    /* it has a table: from the start, or restored */
    size_t join_at; /* while live && !joined: position of its JOIN */
    struct pol *pol;
    size_t cursor; /* the next event of the sequence it applies */
    struct event *outbox;
    size_t nout, outcap;
    unsigned speed;        /* relative pace, so some nodes lag steadily */
    struct pol_write last; /* its latest write (at first v0r0): often again */
    struct swrite wr[WRITES_PER_NODE];
};

/* Ways to break the model on purpose, to show the checks catch it. */
enum sabotage {
    SAB_NONE,
    SAB_ROGUE_WRITER, /* a write refused by the state machine runs anyway */
    SAB_DROP_WAKE,    /* POL_WAKE is ignored */
};

struct stats {
    unsigned long schedules, begun, multi, waited, finished, cancelled, msgs, crashes, joins, lost;
    unsigned long drain_max; /* the most steps a drain took */
};

struct sim {
    uint64_t seed, rng;
    enum sabotage sabotage;
    unsigned nnodes;
    struct node node[MAX_NODES];
    struct event *seq;    /* the agreed sequence */
    struct table *oracle; /* oracle[i]: the table after seq[i] */
    size_t nseq, seqcap;
    struct table now; /* the table after the last event */
    bool draining;
    unsigned long step;
    unsigned next_id;
    struct pol_actions act;
    int trace; /* 0: off, 1: keep the tail, 2: print everything */
    char ring[TRACE_LINES][TRACE_WIDTH];
    unsigned long nring;
    char failure[1024];
    struct stats st;
};

/* ---- utilities ------------------------------------------------------------ */

static uint64_t rnd64(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned rnd(struct sim *s, unsigned n)
{
    return (unsigned)(rnd64(s) % n);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    cr_assert_not_null(q, "out of memory (%zu bytes)", n);
    return q;
}

__attribute__((format(printf, 2, 3))) static void trace(struct sim *s, const char *fmt, ...)
{
    if (s->trace == 0)
        return;
    char *line = s->ring[s->nring++ % TRACE_LINES];
    int off = snprintf(line, TRACE_WIDTH, "[%5lu] ", s->step);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, TRACE_WIDTH - (size_t)off, fmt, ap);
    va_end(ap);
    if (s->trace == 2)
        fprintf(stderr, "%s\n", line);
}

/* Records the first failure of the schedule; returns false to unwind. */
__attribute__((format(printf, 2, 3))) static bool fail(struct sim *s, const char *fmt, ...)
{
    if (s->failure[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
        va_end(ap);
        trace(s, "FAIL: %s", s->failure);
    }
    return false;
}

static unsigned kidx(struct pol_key k)
{
    return k.volume * REGIONS + (unsigned)k.region;
}

static pol_node_t id_of(unsigned i)
{
    return i + 1;
}

/* ---- the oracle: the rules of priority.h, as plainly as possible ---------- */

static bool t_queued(const struct table *t, unsigned k, pol_node_t n)
{
    for (unsigned i = 0; i < t->nq[k]; i++)
        if (t->queue[k][i] == n)
            return true;
    return false;
}

static void t_unqueue(struct table *t, unsigned k, pol_node_t n)
{
    for (unsigned i = 0; i < t->nq[k]; i++) {
        if (t->queue[k][i] != n)
            continue;
        memmove(&t->queue[k][i], &t->queue[k][i + 1], t->nq[k] - i - 1);
        t->nq[k]--;
        return;
    }
}

static void t_pass_on(struct table *t, unsigned k)
{
    t->owner[k] = t->nq[k] ? t->queue[k][0] : 0;
    if (t->nq[k])
        t_unqueue(t, k, t->owner[k]);
}

static void t_apply(struct table *t, const struct event *e)
{
    unsigned k = kidx(e->key);
    switch (e->kind) {
    case EV_REQUEST:
        if (t->owner[k] == e->node || t_queued(t, k, e->node))
            break;
        if (t->owner[k] == 0)
            t->owner[k] = (uint8_t)e->node;
        else
            t->queue[k][t->nq[k]++] = (uint8_t)e->node;
        break;
    case EV_RELEASE:
        if (t->owner[k] == e->node)
            t_pass_on(t, k);
        break;
    case EV_LEAVE:
        for (k = 0; k < KEYS; k++) {
            t_unqueue(t, k, e->node);
            if (t->owner[k] == e->node)
                t_pass_on(t, k);
        }
        break;
    case EV_JOIN:
        break;
    }
}

static void append_event(struct sim *s, struct event e)
{
    if (s->nseq == s->seqcap) {
        s->seqcap = s->seqcap ? 2 * s->seqcap : 256;
        s->seq = xrealloc(s->seq, s->seqcap * sizeof(*s->seq));
        s->oracle = xrealloc(s->oracle, s->seqcap * sizeof(*s->oracle));
    }
    t_apply(&s->now, &e);
    s->seq[s->nseq] = e;
    s->oracle[s->nseq] = s->now;
    s->nseq++;
}

/* Whether node i's table is the oracle's table t (after event pos). */
static bool table_matches(struct sim *s, unsigned i, const struct table *t, size_t pos)
{
    struct pol *p = s->node[i].pol;
    size_t owned = 0;
    for (unsigned k = 0; k < KEYS; k++) {
        struct pol_key key = {k / REGIONS, k % REGIONS};
        pol_node_t q[MAX_NODES + 1];
        pol_node_t owner = pol_owner(p, key);
        size_t nq = pol_waiters(p, key, q, MAX_NODES + 1);
        bool same = owner == t->owner[k] && nq == t->nq[k];
        for (size_t j = 0; same && j < nq; j++)
            same = q[j] == t->queue[k][j];
        if (!same)
            return fail(s,
                        "n%u after #%zu: v%ur%u owner n%u with %zu waiting (first n%u), "
                        "the rules say owner n%u with %u waiting (first n%u)",
                        id_of(i), pos, key.volume, (unsigned)key.region, owner, nq, nq ? q[0] : 0,
                        t->owner[k], t->nq[k], t->nq[k] ? t->queue[k][0] : 0);
        owned += owner != 0;
    }
    if (pol_regions(p) != owned)
        return fail(s, "n%u after #%zu: pol_regions says %zu, the table has %zu", id_of(i), pos,
                    pol_regions(p), owned);
    return true;
}

/* ---- one node's actions ---------------------------------------------------- */

static void outbox_push(struct node *n, struct event e)
{
    if (n->nout == n->outcap) {
        n->outcap = n->outcap ? 2 * n->outcap : 16;
        n->outbox = xrealloc(n->outbox, n->outcap * sizeof(*n->outbox));
    }
    n->outbox[n->nout++] = e;
}

static void mark_woken(struct node *n, struct pol_key k)
{
    for (unsigned w = 0; w < WRITES_PER_NODE; w++) {
        struct swrite *sw = &n->wr[w];
        if (sw->state == W_WAITING && sw->w.volume == k.volume && sw->w.held == k.region)
            sw->woken = true;
    }
}

/* Carries out the actions node i's last call returned. */
static bool carry_out(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    for (size_t a = 0; a < s->act.n; a++) {
        const struct pol_action *x = &s->act.v[a];
        struct event e = {.node = id_of(i), .key = x->key};
        switch (x->kind) {
        case POL_SEND_REQUEST:
        case POL_SEND_RELEASE:
            e.kind = x->kind == POL_SEND_REQUEST ? EV_REQUEST : EV_RELEASE;
            trace(s, "n%u sends %s v%ur%u", id_of(i), ev_name[e.kind], x->key.volume,
                  (unsigned)x->key.region);
            outbox_push(n, e);
            break;
        case POL_WAKE:
            trace(s, "n%u WAKE v%ur%u", id_of(i), x->key.volume, (unsigned)x->key.region);
            if (pol_owner(n->pol, x->key) != id_of(i))
                return fail(s, "n%u woken for v%ur%u, owned by n%u", id_of(i), x->key.volume,
                            (unsigned)x->key.region, pol_owner(n->pol, x->key));
            if (s->sabotage != SAB_DROP_WAKE)
                mark_woken(n, x->key);
            break;
        case POL_LOST:
            break; /* checked by apply_leave, which expects them */
        }
    }
    s->act.n = 0;
    return true;
}

static bool try_start(struct sim *s, unsigned i, struct swrite *sw)
{
    struct node *n = &s->node[i];
    bool ok = pol_write_begin(n->pol, &sw->w, &s->act);
    trace(s, "n%u begin w%u v%ur%u..%u: %s (held to %u)", id_of(i), sw->id, sw->w.volume,
          (unsigned)sw->w.first, (unsigned)sw->w.last, ok ? "in flight" : "waits",
          (unsigned)sw->w.held);
    if (!carry_out(s, i))
        return false;
    if (!ok && s->sabotage == SAB_ROGUE_WRITER) {
        pol_write_cancel(n->pol, &sw->w, &s->act);
        ok = carry_out(s, i);
    }
    sw->state = ok ? W_INFLIGHT : W_WAITING;
    sw->left = 1 + rnd(s, 6);
    return true;
}

static bool new_write(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    struct swrite *sw = &n->wr[rnd(s, WRITES_PER_NODE)];
    if (sw->state != W_FREE)
        return true;
    *sw = (struct swrite){.id = s->next_id++};
    if (rnd(s, 2)) {
        /* Locality, as real clients have: the sticky fast path. */
        sw->w = (struct pol_write){n->last.volume, n->last.first, n->last.last, 0, false};
    } else {
        unsigned span = rnd(s, 3) ? 1 : 2 + rnd(s, MAX_SPAN - 1);
        uint64_t first = rnd(s, REGIONS - span + 1);
        sw->w = (struct pol_write){rnd(s, VOLUMES), first, first + span - 1, 0, false};
    }
    n->last = sw->w;
    s->st.begun++;
    s->st.multi += sw->w.last > sw->w.first;
    if (!try_start(s, i, sw))
        return false;
    s->st.waited += sw->state == W_WAITING;
    return true;
}

static bool tick_write(struct sim *s, unsigned i)
{
    struct swrite *sw = &s->node[i].wr[rnd(s, WRITES_PER_NODE)];
    if (sw->state != W_INFLIGHT || --sw->left > 0)
        return true;
    pol_write_end(s->node[i].pol, &sw->w, &s->act);
    trace(s, "n%u end w%u", id_of(i), sw->id);
    sw->state = W_FREE;
    s->st.finished++;
    return carry_out(s, i);
}

static bool retry_write(struct sim *s, unsigned i)
{
    struct swrite *sw = &s->node[i].wr[rnd(s, WRITES_PER_NODE)];
    if (sw->state != W_WAITING || !sw->woken)
        return true;
    sw->woken = false;
    return try_start(s, i, sw);
}

static bool cancel_write(struct sim *s, unsigned i)
{
    struct swrite *sw = &s->node[i].wr[rnd(s, WRITES_PER_NODE)];
    if (sw->state != W_WAITING)
        return true;
    pol_write_cancel(s->node[i].pol, &sw->w, &s->act);
    trace(s, "n%u cancel w%u", id_of(i), sw->id);
    sw->state = W_FREE;
    s->st.cancelled++;
    return carry_out(s, i);
}

static void flush_one(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    if (n->nout == 0)
        return;
    struct event e = n->outbox[0];
    memmove(&n->outbox[0], &n->outbox[1], (n->nout - 1) * sizeof(*n->outbox));
    n->nout--;
    append_event(s, e);
    s->st.msgs++;
    trace(s, "#%zu = %s n%u v%ur%u", s->nseq - 1, ev_name[e.kind], e.node, e.key.volume,
          (unsigned)e.key.region);
}

/* ---- membership ------------------------------------------------------------ */

static unsigned live_joined(const struct sim *s)
{
    unsigned c = 0;
    for (unsigned i = 0; i < s->nnodes; i++)
        c += s->node[i].live && s->node[i].joined;
    return c;
}

static void crash(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    bool was_joined = n->joined;
    if (live_joined(s) - was_joined < 1)
        return; /* someone must remain to hand the table on */
    pol_free(n->pol);
    n->pol = NULL;
    n->live = n->joined = false;
    n->nout = 0;
    memset(n->wr, 0, sizeof(n->wr));
    append_event(s, (struct event){.kind = EV_LEAVE, .node = id_of(i)});
    s->st.crashes++;
    trace(s, "n%u crashes, #%zu = LEAVE", id_of(i), s->nseq - 1);
}

static void join(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    n->live = true;
    n->joined = false;
    n->join_at = s->nseq;
    append_event(s, (struct event){.kind = EV_JOIN, .node = id_of(i)});
    s->st.joins++;
    trace(s, "n%u starts, #%zu = JOIN", id_of(i), n->join_at);
}

/* Node d applies the JOIN of node j at pos: j gets d's table. */
static bool hand_over(struct sim *s, unsigned d, unsigned j, size_t pos)
{
    struct node *n = &s->node[j];
    void *buf = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    int r = pol_snapshot(s->node[d].pol, &buf, &len);
    if (r != 0)
        return fail(s, "n%u: pol_snapshot: %s", id_of(d), strerror(-r));
    n->pol = pol_new(id_of(j));
    cr_assert_not_null(n->pol, "pol_new(%u): %s", id_of(j), strerror(errno));
    struct pol_actions restore_out = {0};
    r = pol_restore(n->pol, buf, len, &restore_out);
    bool quiet = restore_out.n == 0; /* a new node owes nothing yet */
    pol_actions_free(&restore_out);
    if (r == 0 && !quiet)
        return fail(s, "n%u: restoring gave actions to a node without writes", id_of(j));
    if (r == 0)
        r = pol_snapshot(n->pol, &again, &len2);
    bool same = r == 0 && len == len2 && memcmp(buf, again, len) == 0;
    free(buf);
    free(again);
    if (!same)
        return fail(s, "n%u: restoring n%u's snapshot (%zu bytes) gave %d, %zu bytes back",
                    id_of(j), id_of(d), len, r, len2);
    n->joined = true;
    n->cursor = pos + 1;
    trace(s, "n%u hands its table at #%zu to n%u (%zu bytes)", id_of(d), pos, id_of(j), len);
    return table_matches(s, j, &s->oracle[pos], pos);
}

/* Node i applies a leave: exactly the regions gone owned are lost. */
static bool apply_leave(struct sim *s, unsigned i, pol_node_t gone, size_t pos)
{
    static const struct table nobody;
    const struct table *before = pos > 0 ? &s->oracle[pos - 1] : &nobody;
    pol_on_leave(s->node[i].pol, gone, &s->act);
    bool seen[KEYS] = {false};
    for (size_t a = 0; a < s->act.n; a++) {
        const struct pol_action *x = &s->act.v[a];
        if (x->kind != POL_LOST)
            continue;
        unsigned k = kidx(x->key);
        if (x->node != gone || before->owner[k] != gone || seen[k])
            return fail(s, "n%u: LOST v%ur%u of n%u on n%u's leave; owner was n%u", id_of(i),
                        x->key.volume, (unsigned)x->key.region, x->node, gone, before->owner[k]);
        seen[k] = true;
        s->st.lost++;
    }
    for (unsigned k = 0; k < KEYS; k++)
        if (before->owner[k] == gone && !seen[k])
            return fail(s, "n%u: n%u left owning v%ur%u, not reported lost", id_of(i), gone,
                        k / REGIONS, k % REGIONS);
    return true;
}

static bool apply_next(struct sim *s, unsigned i)
{
    struct node *n = &s->node[i];
    size_t pos = n->cursor++;
    const struct event *e = &s->seq[pos];
    if (e->kind == EV_REQUEST || e->kind == EV_RELEASE)
        trace(s, "n%u applies #%zu %s n%u v%ur%u", id_of(i), pos, ev_name[e->kind], e->node,
              e->key.volume, (unsigned)e->key.region);
    else
        trace(s, "n%u applies #%zu %s n%u", id_of(i), pos, ev_name[e->kind], e->node);
    switch (e->kind) {
    case EV_REQUEST:
        pol_on_request(n->pol, e->key, e->node, &s->act);
        break;
    case EV_RELEASE:
        pol_on_release(n->pol, e->key, e->node, &s->act);
        break;
    case EV_LEAVE:
        if (!apply_leave(s, i, e->node, pos))
            return false;
        break;
    case EV_JOIN: {
        struct node *j = &s->node[e->node - 1];
        if (j->live && !j->joined && j->join_at == pos && !hand_over(s, i, e->node - 1, pos))
            return false;
        break;
    }
    }
    return table_matches(s, i, &s->oracle[pos], pos) && carry_out(s, i);
}

/* ---- checks at every step --------------------------------------------------- */

/* Invariant 3 in real time, and each node's own view of what it holds. */
static bool check_writers(struct sim *s)
{
    const struct swrite *fl[MAX_NODES * WRITES_PER_NODE];
    unsigned who[MAX_NODES * WRITES_PER_NODE], nf = 0;
    for (unsigned i = 0; i < s->nnodes; i++) {
        const struct node *n = &s->node[i];
        for (unsigned w = 0; n->live && w < WRITES_PER_NODE; w++) {
            const struct swrite *sw = &n->wr[w];
            if (sw->state == W_FREE)
                continue;
            uint64_t end = sw->state == W_INFLIGHT ? sw->w.last + 1 : sw->w.held;
            for (uint64_t r = sw->w.first; r < end && s->sabotage != SAB_ROGUE_WRITER; r++) {
                struct pol_key k = {sw->w.volume, r};
                if (pol_owner(n->pol, k) != id_of(i))
                    return fail(s, "n%u holds v%ur%u for w%u, its table says n%u owns it", id_of(i),
                                k.volume, (unsigned)r, sw->id, pol_owner(n->pol, k));
            }
            if (sw->state == W_INFLIGHT) {
                fl[nf] = sw;
                who[nf++] = i;
            }
        }
    }
    for (unsigned a = 0; a < nf; a++)
        for (unsigned b = a + 1; b < nf; b++) {
            const struct pol_write *x = &fl[a]->w, *y = &fl[b]->w;
            if (who[a] == who[b] || x->volume != y->volume || x->last < y->first ||
                y->last < x->first)
                continue;
            return fail(s, "two writers: n%u w%u on v%ur%u..%u and n%u w%u on v%ur%u..%u",
                        id_of(who[a]), fl[a]->id, x->volume, (unsigned)x->first, (unsigned)x->last,
                        id_of(who[b]), fl[b]->id, y->volume, (unsigned)y->first, (unsigned)y->last);
        }
    return true;
}

/* ---- the schedule ----------------------------------------------------------- */

static unsigned pick_node(struct sim *s)
{
    unsigned total = 0;
    for (unsigned i = 0; i < s->nnodes; i++)
        total += s->node[i].live ? s->node[i].speed : 1;
    unsigned r = rnd(s, total);
    for (unsigned i = 0; i < s->nnodes; i++) {
        unsigned w = s->node[i].live ? s->node[i].speed : 1;
        if (r < w)
            return i;
        r -= w;
    }
    return s->nnodes - 1;
}

static bool step(struct sim *s)
{
    s->step++;
    unsigned i = pick_node(s);
    struct node *n = &s->node[i];
    unsigned r = rnd(s, 100);
    if (!n->live) {
        if (!s->draining && r < 3)
            join(s, i);
        return true;
    }
    if (!n->joined)
        return true; /* waits for a member to hand it the table */
    if (r < 30)
        return n->cursor == s->nseq || apply_next(s, i);
    if (r < 50) {
        flush_one(s, i);
        return true;
    }
    if (r < 65)
        return tick_write(s, i);
    if (r < 80)
        return retry_write(s, i);
    if (s->draining)
        return true;
    if (r < 94)
        return new_write(s, i);
    if (r < 97)
        return cancel_write(s, i);
    if (rnd(s, 3) == 0)
        crash(s, i);
    return true;
}

static bool quiescent(const struct sim *s)
{
    for (unsigned i = 0; i < s->nnodes; i++) {
        const struct node *n = &s->node[i];
        if (!n->live)
            continue;
        if (!n->joined || n->cursor != s->nseq || n->nout != 0)
            return false;
        for (unsigned w = 0; w < WRITES_PER_NODE; w++)
            if (n->wr[w].state != W_FREE)
                return false;
    }
    return true;
}

/* Names what is still stuck, for the liveness failure. */
static bool stuck(struct sim *s)
{
    char what[600] = "";
    size_t used = 0;
    for (unsigned i = 0; i < s->nnodes; i++) {
        const struct node *n = &s->node[i];
        for (unsigned w = 0; n->live && w < WRITES_PER_NODE; w++) {
            const struct swrite *sw = &n->wr[w];
            if (sw->state == W_FREE || used >= sizeof(what) - 1)
                continue;
            struct pol_key k = {sw->w.volume, sw->w.held};
            used += (size_t)snprintf(what + used, sizeof(what) - used,
                                     " n%u w%u v%ur%u..%u %s at r%u (owner n%u);", id_of(i), sw->id,
                                     sw->w.volume, (unsigned)sw->w.first, (unsigned)sw->w.last,
                                     sw->state == W_WAITING ? "waiting" : "in flight",
                                     (unsigned)sw->w.held, pol_owner(n->pol, k));
        }
    }
    return fail(s, "not quiescent after %d drain steps:%s", DRAIN_STEPS, what);
}

/* Once all is delivered and done, every queue is empty and every owner is
 * a live member: each request of a node that stayed was granted. */
static bool check_quiet_table(struct sim *s)
{
    for (unsigned k = 0; k < KEYS; k++) {
        if (s->now.nq[k] != 0)
            return fail(s, "quiescent, yet n%u still waits for v%ur%u", s->now.queue[k][0],
                        k / REGIONS, k % REGIONS);
        pol_node_t o = s->now.owner[k];
        if (o != 0 && !s->node[o - 1].live)
            return fail(s, "quiescent, yet departed n%u owns v%ur%u", o, k / REGIONS, k % REGIONS);
    }
    return true;
}

static void sim_free(struct sim *s)
{
    for (unsigned i = 0; i < MAX_NODES; i++) {
        pol_free(s->node[i].pol);
        free(s->node[i].outbox);
    }
    free(s->seq);
    free(s->oracle);
    pol_actions_free(&s->act);
}

static bool schedule(struct sim *s)
{
    s->nnodes = 2 + rnd(s, MAX_NODES - 1);
    for (unsigned i = 0; i < s->nnodes; i++) {
        struct node *n = &s->node[i];
        n->live = n->joined = true;
        n->speed = 1 + rnd(s, 4);
        n->pol = pol_new(id_of(i));
        cr_assert_not_null(n->pol, "pol_new(%u): %s", id_of(i), strerror(errno));
    }
    trace(s, "seed %" PRIu64 ": %u nodes", s->seed, s->nnodes);
    unsigned active = 100 + rnd(s, 300);
    for (unsigned t = 0; t < active; t++)
        if (!step(s) || !check_writers(s))
            return false;
    s->draining = true;
    trace(s, "drain: no new writes, cancels, crashes or joins");
    unsigned long t;
    for (t = 0; !quiescent(s); t++) {
        if (t == DRAIN_STEPS)
            return stuck(s);
        if (!step(s) || !check_writers(s))
            return false;
    }
    s->st.drain_max = t;
    return check_quiet_table(s);
}

/* Runs one seed; on failure copies the reason into why (if given) and,
 * when tracing is 1, prints the tail of the trace. */
static bool run(uint64_t seed, int tracing, enum sabotage sab, struct stats *st, char *why,
                size_t whylen)
{
    struct sim *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->seed = s->rng = seed;
    s->trace = tracing;
    s->sabotage = sab;
    bool ok = schedule(s);
    if (!ok && why != NULL)
        snprintf(why, whylen, "%s", s->failure);
    if (!ok && tracing == 1) {
        unsigned long from = s->nring > TRACE_LINES ? s->nring - TRACE_LINES : 0;
        fprintf(stderr, "priority_sim: seed %" PRIu64 " failed; the last %lu events:\n", seed,
                s->nring - from);
        for (unsigned long l = from; l < s->nring; l++)
            fprintf(stderr, "  %s\n", s->ring[l % TRACE_LINES]);
    }
    if (st != NULL) {
        st->schedules++;
        st->begun += s->st.begun;
        st->multi += s->st.multi;
        st->waited += s->st.waited;
        st->finished += s->st.finished;
        st->cancelled += s->st.cancelled;
        st->msgs += s->st.msgs;
        st->crashes += s->st.crashes;
        st->joins += s->st.joins;
        st->lost += s->st.lost;
        if (s->st.drain_max > st->drain_max)
            st->drain_max = s->st.drain_max;
    }
    sim_free(s);
    free(s);
    return ok;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    cr_assert(errno == 0 && *end == '\0', "%s=\"%s\": not a number", name, v);
    return x;
}

Test(priority_sim, random_schedules, .timeout = 300)
{
    const char *one = getenv("PRIORITY_SIM_SEED");
    if (one != NULL && *one != '\0') {
        uint64_t seed = env_u64("PRIORITY_SIM_SEED", 0);
        char why[1024];
        bool ok = run(seed, 2, SAB_NONE, NULL, why, sizeof(why));
        cr_assert(ok, "seed %" PRIu64 ": %s", seed, why);
        fprintf(stderr, "priority_sim: seed %" PRIu64 " passed\n", seed);
        return;
    }
    uint64_t first = env_u64("PRIORITY_SIM_FIRST", 1);
    uint64_t count = env_u64("PRIORITY_SIM_COUNT", SCHEDULES);
    struct stats st = {0};
    for (uint64_t seed = first; seed < first + count; seed++) {
        char why[1024];
        if (run(seed, 0, SAB_NONE, &st, why, sizeof(why)))
            continue;
        run(seed, 1, SAB_NONE, NULL, NULL, 0);
        cr_assert_fail("seed %" PRIu64 ": %s\n(replay: PRIORITY_SIM_SEED=%" PRIu64 " %s)", seed,
                       why, seed, "build/tests/test_priority_sim");
    }
    fprintf(
        stderr,
        "priority_sim: %lu schedules passed, seeds %" PRIu64 "..%" PRIu64 ": %lu writes "
        "begun (%lu multi-region, %lu at once, %lu had to wait), %lu finished, %lu cancelled; %lu "
        "messages, %lu crashes, %lu joins, %lu regions lost; drains took at most %lu "
        "steps of %d allowed\n",
        st.schedules, first, first + count - 1, st.begun, st.multi, st.begun - st.waited, st.waited,
        st.finished, st.cancelled, st.msgs, st.crashes, st.joins, st.lost, st.drain_max,
        DRAIN_STEPS);
    /* The schedules must really contend, crash and join, or passing is
     * no evidence. */
    cr_assert_gt(st.waited, count, "too little contention");
    cr_assert_gt(st.multi, count, "too few multi-region writes");
    cr_assert_gt(st.crashes, count / 4, "too few crashes");
    cr_assert_gt(st.joins, count / 8, "too few joins");
    cr_assert_gt(st.lost, count / 8, "too few regions lost to a crash");
    cr_assert_gt(st.cancelled, count / 4, "too few cancelled writes");
    cr_assert_gt(st.finished, count, "too few writes finished");
    cr_assert_gt(st.begun - st.waited, count, "too few writes on the fast path");
}

/* The checks themselves: a write that runs although the state machine
 * refused it must be caught as two writers... */
Test(priority_sim, catches_a_rogue_writer)
{
    char why[1024] = "";
    unsigned caught = 0;
    for (uint64_t seed = 1; seed <= 50; seed++)
        if (!run(seed, 0, SAB_ROGUE_WRITER, NULL, why, sizeof(why)))
            caught += strstr(why, "two writers") != NULL;
    cr_assert_gt(caught, 25, "only %u of 50 schedules with a rogue writer were caught", caught);
}

/* ...and a lost wake-up as a write that never finishes. */
Test(priority_sim, catches_a_lost_wakeup)
{
    char why[1024] = "";
    unsigned caught = 0;
    for (uint64_t seed = 1; seed <= 50; seed++)
        if (!run(seed, 0, SAB_DROP_WAKE, NULL, why, sizeof(why)))
            caught += strstr(why, "not quiescent") != NULL;
    cr_assert_gt(caught, 25, "only %u of 50 schedules without wake-ups were caught", caught);
}
