/* verify.c - comparing copies: region_differs compares a region's CRC-64s
 * on this node and on every current peer (the reconcile, reconcile.c,
 * asks it too), and mirror_verify runs it over a whole volume for the
 * admin, on a thread of its own (at most VERIFIES_MAX at once), under each
 * region's priority and range.
 */
#include "mirror/engine_int.h"

#include "policing/protocol.h"
#include "store/svol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_LIST_MAX 64
/* Verifies run on threads of their own (an admin waits for each), at most
 * this many at once. */
#define VERIFIES_MAX 2

struct verify {
    struct mvol *v;
    mirror_verify_fn done;
    void *arg;
};

/* Whether the current peers' CRC-64s of region r differ from this node's;
 * the caller holds the region's priority and range. */
int region_differs(struct mvol *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)region_len(v, r);
    uint32_t size = mwire_csum_reply_size(len);
    struct mlink_op ops[STORE_REPLICAS_MAX];
    uint64_t *sums = calloc(n + 1, size);
    int e = sums ? 0 : -ENOMEM;
    for (size_t i = 0; e == 0 && i < n; i++) {
        ops[i] = (struct mlink_op){
            .peer = peers[i], .reply_buf = (char *)sums + (i + 1) * size, .reply_max = size};
        mwire_init(&ops[i].req, MW_CSUM, 0);
        ops[i].req.volume = v->vid;
        ops[i].req.offset = off;
        ops[i].req.length = len;
    }
    if (e == 0)
        mlink_call(m->link, ops, n);
    void *buf = e == 0 ? malloc(MWIRE_CSUM_CHUNK) : NULL;
    for (uint32_t c = 0; e == 0 && buf && c < size / 8; c++) {
        uint32_t k = len - c * MWIRE_CSUM_CHUNK < MWIRE_CSUM_CHUNK ? len - c * MWIRE_CSUM_CHUNK
                                                                   : MWIRE_CSUM_CHUNK;
        e = svol_read(v->sv, buf, k, off + (uint64_t)c * MWIRE_CSUM_CHUNK, 0);
        if (e == 0)
            sums[c] = mwire_csum64(buf, k);
    }
    free(buf);
    for (size_t i = 0; e == 0 && i < n; i++) {
        if (ops[i].result < 0)
            e = ops[i].result;
        else if (memcmp(sums, (char *)sums + (i + 1) * size, size) != 0)
            *differs = true;
    }
    free(sums);
    return e;
}

static int verify_region(struct mvol *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)region_len(v, r);
    if (len == 0)
        return 0;
    struct pol_write w;
    int e = policing_write_begin(v->pc, v->vid, off, len, false, &w);
    if (e < 0)
        return e;
    struct inflight x;
    range_lock(v, &x, off, len, true);
    e = region_differs(v, r, peers, n, differs);
    range_unlock(v, &x);
    policing_write_end(v->pc, &w);
    return e;
}

static void *verify_main(void *arg)
{
    struct verify *vf = arg;
    struct mvol *v = vf->v;
    struct mirror *m = v->m;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    bool local = atomic_load(&v->serve_local);
    uint64_t nr = nregions(m, vsize(v)), ndiff = 0;
    uint64_t list[VERIFY_LIST_MAX];
    int e = local ? 0 : -ESTALE;
    for (uint64_t r = 0; e == 0 && r < nr; r++) {
        bool differs = false;
        e = verify_region(v, r, peers, n, &differs);
        if (differs && ndiff < VERIFY_LIST_MAX)
            list[ndiff] = r;
        ndiff += differs;
    }
    vf->done(vf->arg, e, list, ndiff < VERIFY_LIST_MAX ? ndiff : VERIFY_LIST_MAX, ndiff, nr);
    mvol_unref(v);
    free(vf);
    atomic_fetch_sub(&m->verifies, 1);
    return NULL;
}

int mirror_verify(struct mvol *v, mirror_verify_fn done, void *arg)
{
    if (atomic_fetch_add(&v->m->verifies, 1) >= VERIFIES_MAX) {
        atomic_fetch_sub(&v->m->verifies, 1);
        return -EBUSY;
    }
    struct verify *vf = malloc(sizeof *vf);
    if (!vf) {
        atomic_fetch_sub(&v->m->verifies, 1);
        return -ENOMEM;
    }
    *vf = (struct verify){v, done, arg};
    mvol_ref(v);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = -pthread_create(&t, &attr, verify_main, vf);
    pthread_attr_destroy(&attr);
    if (r < 0) {
        atomic_fetch_sub(&v->m->verifies, 1);
        mvol_unref(v);
        free(vf);
    }
    return r;
}
