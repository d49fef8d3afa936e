/* syncstream.c - the sync round's state stream: records in, records out,
 * pieces and their assembly (see syncstream.h). */
#include "policing/syncstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>
#include <qb/qblog.h>

_Static_assert(PMSG_STREAM_MAX <= INT32_MAX, "a stream's length fits the CRC call and the pieces");

/* ---- encoding ------------------------------------------------------------- */

static size_t replicas_len(const struct policing_volume *v)
{
    return sizeof(struct sync_rec_replicas) + v->nreplicas * sizeof(struct sync_rec_replica);
}

static size_t encoded_len(const struct sync_state *s)
{
    size_t rec = sizeof(struct sync_record);
    size_t len = sizeof(struct sync_header) + rec + s->regions_len;
    for (size_t i = 0; i < s->nvols; i++)
        len += 2 * rec + sizeof(struct sync_rec_volume) + replicas_len(&s->vols[i]);
    len += s->nsnaps * (rec + sizeof(struct sync_rec_snapshot)) + rec + sizeof(uint64_t);
    len += s->nfences * (rec + sizeof(struct sync_rec_fence));
    len += s->ngrants * (rec + sizeof(struct sync_rec_grant));
    len += s->idents.nowners * (rec + sizeof(struct sync_rec_owner));
    len += s->idents.nquotas * (rec + sizeof(struct sync_rec_quota));
    len += s->idents.ntokens * (rec + sizeof(struct sync_rec_token));
    return len + s->services.n * (rec + sizeof(struct sync_rec_service));
}

/* Writes a record's head at at; returns where its body goes. */
static unsigned char *put_record(unsigned char *at, enum sync_record_type type, size_t length)
{
    struct sync_record r = {.type = (uint16_t)type, .length = (uint32_t)length};
    memcpy(at, &r, sizeof r);
    return at + sizeof r;
}

static unsigned char *put_volume(unsigned char *at, const struct policing_volume *v)
{
    struct sync_rec_volume rv = {.size = v->size, .generation = v->generation, .fixed = v->fixed};
    memcpy(rv.uuid, v->uuid, sizeof rv.uuid);
    memcpy(rv.name, v->name, sizeof rv.name);
    at = put_record(at, SYNC_REC_VOLUME, sizeof rv);
    memcpy(at, &rv, sizeof rv);
    at += sizeof rv;

    struct sync_rec_replicas rs = {.count = v->nreplicas};
    memcpy(rs.uuid, v->uuid, sizeof rs.uuid);
    at = put_record(at, SYNC_REC_REPLICAS, replicas_len(v));
    memcpy(at, &rs, sizeof rs);
    at += sizeof rs;
    for (uint32_t j = 0; j < v->nreplicas; j++) {
        struct sync_rec_replica r = {v->replicas[j].node, v->replicas[j].state};
        memcpy(at, &r, sizeof r);
        at += sizeof r;
    }
    return at;
}

static unsigned char *put_snapshot(unsigned char *at, const struct policing_snap *p)
{
    struct sync_rec_snapshot rs = {.id = p->id, .time = p->time, .size = p->size};
    memcpy(rs.uuid, p->uuid, sizeof rs.uuid);
    memcpy(rs.name, p->name, sizeof rs.name);
    at = put_record(at, SYNC_REC_SNAPSHOT, sizeof rs);
    memcpy(at, &rs, sizeof rs);
    return at + sizeof rs;
}

static unsigned char *put_fence(unsigned char *at, const struct policing_fence *f)
{
    struct sync_rec_fence rf = {.node = f->node};
    memcpy(rf.uuid, f->uuid, sizeof rf.uuid);
    at = put_record(at, SYNC_REC_FENCE, sizeof rf);
    memcpy(at, &rf, sizeof rf);
    return at + sizeof rf;
}

static unsigned char *put_grant(unsigned char *at, const struct policing_grant *g)
{
    struct sync_rec_grant rg = {.read_only = g->read_only};
    memcpy(rg.uuid, g->uuid, sizeof rg.uuid);
    memcpy(rg.identity, g->identity, sizeof rg.identity);
    at = put_record(at, SYNC_REC_GRANT, sizeof rg);
    memcpy(at, &rg, sizeof rg);
    return at + sizeof rg;
}

/* One fixed-size record of type with body (len bytes). */
static unsigned char *put_body(unsigned char *at, enum sync_record_type type, const void *body,
                               size_t len)
{
    at = put_record(at, type, len);
    memcpy(at, body, len);
    return at + len;
}

static unsigned char *put_idents(unsigned char *at, const struct policing_idents *id)
{
    for (size_t i = 0; i < id->nowners; i++) {
        struct sync_rec_owner ro;
        memcpy(ro.uuid, id->owners[i].uuid, sizeof ro.uuid);
        memcpy(ro.identity, id->owners[i].identity, sizeof ro.identity);
        at = put_body(at, SYNC_REC_OWNER, &ro, sizeof ro);
    }
    for (size_t i = 0; i < id->nquotas; i++) {
        struct sync_rec_quota rq = {.limit = id->quotas[i].limit, .volumes = id->quotas[i].volumes};
        memcpy(rq.identity, id->quotas[i].identity, sizeof rq.identity);
        at = put_body(at, SYNC_REC_QUOTA, &rq, sizeof rq);
    }
    for (size_t i = 0; i < id->ntokens; i++) {
        const struct policing_token *t = &id->tokens[i];
        struct sync_rec_token rt = {.created = t->created};
        memcpy(rt.id, t->id, sizeof rt.id);
        memcpy(rt.hash, t->hash, sizeof rt.hash);
        memcpy(rt.identity, t->identity, sizeof rt.identity);
        at = put_body(at, SYNC_REC_TOKEN, &rt, sizeof rt);
    }
    return at;
}

static unsigned char *put_service(unsigned char *at, const struct svc_entry *e)
{
    struct sync_rec_service rs = {.owner = e->owner, .holder = e->holder, .manual = e->manual};
    memcpy(rs.addr, e->addr, sizeof rs.addr);
    at = put_record(at, SYNC_REC_SERVICE, sizeof rs);
    memcpy(at, &rs, sizeof rs);
    return at + sizeof rs;
}

int sync_encode(const struct sync_state *s, void **out, size_t *len)
{
    for (size_t i = 0; i < s->nvols; i++)
        if (s->vols[i].nreplicas > PMSG_REPLICAS_MAX)
            return -EINVAL;
    size_t n = encoded_len(s);
    if (n > PMSG_STREAM_MAX)
        return -EFBIG;
    unsigned char *buf = malloc(n);
    if (!buf)
        return -ENOMEM;
    struct sync_header h = {SYNC_MAGIC, SYNC_FORMAT, 0, s->applied, s->table_version};
    memcpy(buf, &h, sizeof h);
    unsigned char *at = buf + sizeof h;
    for (size_t i = 0; i < s->nvols; i++)
        at = put_volume(at, &s->vols[i]);
    for (size_t i = 0; i < s->nsnaps; i++)
        at = put_snapshot(at, &s->snaps[i]);
    at = put_record(at, SYNC_REC_CUT, sizeof s->last_cut);
    memcpy(at, &s->last_cut, sizeof s->last_cut);
    at += sizeof s->last_cut;
    for (size_t i = 0; i < s->nfences; i++)
        at = put_fence(at, &s->fences[i]);
    for (size_t i = 0; i < s->ngrants; i++)
        at = put_grant(at, &s->grants[i]);
    at = put_idents(at, &s->idents);
    for (size_t i = 0; i < s->services.n; i++)
        at = put_service(at, &s->services.v[i]);
    at = put_record(at, SYNC_REC_REGIONS, s->regions_len);
    if (s->regions_len > 0)
        memcpy(at, s->regions, s->regions_len);
    *out = buf;
    *len = n;
    return 0;
}

/* ---- decoding ------------------------------------------------------------- */

/* Room for one more element of size in *v (holding n, room for *cap). */
static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? 2 * *cap : 16;
    void *p = realloc(*v, c * size);
    if (!p)
        return -ENOMEM;
    *v = p;
    *cap = c;
    return 0;
}

static int add_volume(struct sync_state *s, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_volume rv;
    if (len < sizeof rv)
        return -EINVAL;
    memcpy(&rv, body, sizeof rv);
    if (!pmsg_string_ok(rv.uuid, sizeof rv.uuid) || !pmsg_string_ok(rv.name, sizeof rv.name))
        return -EINVAL;
    if (grow((void **)&s->vols, cap, s->nvols, sizeof *s->vols) < 0)
        return -ENOMEM;
    struct policing_volume *v = &s->vols[s->nvols++];
    memset(v, 0, sizeof *v);
    memcpy(v->uuid, rv.uuid, sizeof v->uuid);
    memcpy(v->name, rv.name, sizeof v->name);
    v->size = rv.size;
    v->generation = rv.generation;
    v->fixed = rv.fixed != 0;
    return 0;
}

/* A replica set belongs to the volume record just before it. */
static int add_replicas(struct sync_state *s, bool after_volume, const unsigned char *body,
                        size_t len)
{
    struct sync_rec_replicas rs;
    if (!after_volume || len < sizeof rs)
        return -EINVAL;
    memcpy(&rs, body, sizeof rs);
    struct policing_volume *v = &s->vols[s->nvols - 1];
    if (rs.count > PMSG_REPLICAS_MAX ||
        len < sizeof rs + rs.count * sizeof(struct sync_rec_replica) ||
        memcmp(rs.uuid, v->uuid, sizeof rs.uuid) != 0)
        return -EINVAL;
    for (uint32_t j = 0; j < rs.count; j++) {
        struct sync_rec_replica r;
        memcpy(&r, body + sizeof rs + j * sizeof r, sizeof r);
        v->replicas[j] = (struct policing_replica){r.node, r.state};
    }
    v->nreplicas = rs.count;
    return 0;
}

static int add_service(struct sync_state *s, const void *body, size_t len)
{
    struct sync_rec_service rs;
    if (len < sizeof rs)
        return -EINVAL;
    memcpy(&rs, body, sizeof rs);
    if (!pmsg_string_ok(rs.addr, sizeof rs.addr) || svc_addr_parse(rs.addr, NULL, NULL) < 0 ||
        rs.owner == 0 || rs.holder == 0 || rs.manual > 1 || s->services.n == CLUSTER_NODES_MAX) {
        qb_log(LOG_ERR,
               "policing: the group's state has a malformed service address entry "
               "(owner %u): ignored",
               rs.owner);
        return 0;
    }
    struct svc_entry *e = &s->services.v[s->services.n++];
    *e = (struct svc_entry){.owner = rs.owner, .holder = rs.holder, .manual = rs.manual};
    memcpy(e->addr, rs.addr, sizeof e->addr);
    return 0;
}

static int add_snapshot(struct sync_state *s, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_snapshot rs;
    if (len < sizeof rs)
        return -EINVAL;
    memcpy(&rs, body, sizeof rs);
    if (!pmsg_string_ok(rs.uuid, sizeof rs.uuid) || !pmsg_string_ok(rs.name, sizeof rs.name))
        return -EINVAL;
    if (grow((void **)&s->snaps, cap, s->nsnaps, sizeof *s->snaps) < 0)
        return -ENOMEM;
    struct policing_snap *p = &s->snaps[s->nsnaps++];
    *p = (struct policing_snap){.id = rs.id, .time = rs.time, .size = rs.size};
    memcpy(p->uuid, rs.uuid, sizeof p->uuid);
    memcpy(p->name, rs.name, sizeof p->name);
    return 0;
}

static int add_fence(struct sync_state *s, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_fence rf;
    if (len < sizeof rf)
        return -EINVAL;
    memcpy(&rf, body, sizeof rf);
    if (!pmsg_string_ok(rf.uuid, sizeof rf.uuid) || rf.node == 0) {
        qb_log(LOG_ERR, "policing: the group's state has a malformed rollback fence: ignored");
        return 0;
    }
    if (grow((void **)&s->fences, cap, s->nfences, sizeof *s->fences) < 0)
        return -ENOMEM;
    struct policing_fence *f = &s->fences[s->nfences++];
    f->node = rf.node;
    memcpy(f->uuid, rf.uuid, sizeof f->uuid);
    return 0;
}

static int add_grant(struct sync_state *s, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_grant rg;
    if (len < sizeof rg)
        return -EINVAL;
    memcpy(&rg, body, sizeof rg);
    if (!pmsg_string_ok(rg.uuid, sizeof rg.uuid) ||
        !pmsg_string_ok(rg.identity, sizeof rg.identity) || !rg.identity[0] || rg.read_only > 1) {
        qb_log(LOG_ERR, "policing: the group's state has a malformed grant: ignored");
        return 0;
    }
    if (grow((void **)&s->grants, cap, s->ngrants, sizeof *s->grants) < 0)
        return -ENOMEM;
    struct policing_grant *g = &s->grants[s->ngrants++];
    g->read_only = rg.read_only;
    memcpy(g->uuid, rg.uuid, sizeof g->uuid);
    memcpy(g->identity, rg.identity, sizeof g->identity);
    return 0;
}

static bool identity_ok(const char *identity, size_t size)
{
    return pmsg_string_ok(identity, size) && identity[0];
}

static int add_owner(struct policing_idents *id, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_owner ro;
    if (len < sizeof ro)
        return -EINVAL;
    memcpy(&ro, body, sizeof ro);
    if (!pmsg_string_ok(ro.uuid, sizeof ro.uuid) || !identity_ok(ro.identity, sizeof ro.identity)) {
        qb_log(LOG_ERR, "policing: the group's state has a malformed owner: ignored");
        return 0;
    }
    if (grow((void **)&id->owners, cap, id->nowners, sizeof *id->owners) < 0)
        return -ENOMEM;
    struct policing_owner *o = &id->owners[id->nowners++];
    memcpy(o->uuid, ro.uuid, sizeof o->uuid);
    memcpy(o->identity, ro.identity, sizeof o->identity);
    return 0;
}

static int add_quota(struct policing_idents *id, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_quota rq;
    if (len < sizeof rq)
        return -EINVAL;
    memcpy(&rq, body, sizeof rq);
    if (!identity_ok(rq.identity, sizeof rq.identity) || rq.limit == 0 || rq.volumes == 0) {
        qb_log(LOG_ERR, "policing: the group's state has a malformed quota: ignored");
        return 0;
    }
    if (grow((void **)&id->quotas, cap, id->nquotas, sizeof *id->quotas) < 0)
        return -ENOMEM;
    struct policing_quota *q = &id->quotas[id->nquotas++];
    memset(q, 0, sizeof *q); /* its padding too: the lists are compared whole */
    q->limit = rq.limit;
    q->volumes = rq.volumes;
    memcpy(q->identity, rq.identity, sizeof q->identity);
    return 0;
}

static int add_token(struct policing_idents *id, size_t *cap, const void *body, size_t len)
{
    struct sync_rec_token rt;
    if (len < sizeof rt)
        return -EINVAL;
    memcpy(&rt, body, sizeof rt);
    if (!identity_ok(rt.id, sizeof rt.id) || !identity_ok(rt.identity, sizeof rt.identity)) {
        qb_log(LOG_ERR, "policing: the group's state has a malformed token: ignored");
        return 0;
    }
    if (grow((void **)&id->tokens, cap, id->ntokens, sizeof *id->tokens) < 0)
        return -ENOMEM;
    struct policing_token *t = &id->tokens[id->ntokens++];
    t->created = rt.created;
    memcpy(t->id, rt.id, sizeof t->id);
    memcpy(t->hash, rt.hash, sizeof t->hash);
    memcpy(t->identity, rt.identity, sizeof t->identity);
    return 0;
}

static int decode_records(const unsigned char *at, const unsigned char *end, struct sync_state *s)
{
    size_t cap = 0, snapcap = 0, fencecap = 0, grantcap = 0, ocap = 0, qcap = 0, tcap = 0;
    bool after_volume = false, regions = false;
    while (at < end) {
        struct sync_record r;
        if ((size_t)(end - at) < sizeof r)
            return -EINVAL;
        memcpy(&r, at, sizeof r);
        at += sizeof r;
        if (r.length > (size_t)(end - at))
            return -EINVAL;
        int e = 0;
        switch (r.type) {
        case SYNC_REC_VOLUME:
            e = add_volume(s, &cap, at, r.length);
            break;
        case SYNC_REC_REPLICAS:
            e = add_replicas(s, after_volume, at, r.length);
            break;
        case SYNC_REC_SERVICE:
            e = add_service(s, at, r.length);
            break;
        case SYNC_REC_SNAPSHOT:
            e = add_snapshot(s, &snapcap, at, r.length);
            break;
        case SYNC_REC_CUT:
            if (r.length < sizeof s->last_cut)
                return -EINVAL;
            memcpy(&s->last_cut, at, sizeof s->last_cut);
            break;
        case SYNC_REC_FENCE:
            e = add_fence(s, &fencecap, at, r.length);
            break;
        case SYNC_REC_GRANT:
            e = add_grant(s, &grantcap, at, r.length);
            break;
        case SYNC_REC_OWNER:
            e = add_owner(&s->idents, &ocap, at, r.length);
            break;
        case SYNC_REC_QUOTA:
            e = add_quota(&s->idents, &qcap, at, r.length);
            break;
        case SYNC_REC_TOKEN:
            e = add_token(&s->idents, &tcap, at, r.length);
            break;
        case SYNC_REC_REGIONS:
            if (regions)
                return -EINVAL;
            regions = true;
            s->regions = at;
            s->regions_len = r.length;
            break;
        default: /* a newer vsan's record: skipped by its length */
            s->skipped++;
            break;
        }
        if (e < 0)
            return e;
        after_volume = r.type == SYNC_REC_VOLUME;
        at += r.length;
    }
    return regions ? 0 : -EINVAL;
}

int sync_decode(const void *buf, size_t len, struct sync_state *s)
{
    *s = (struct sync_state){0};
    struct sync_header h;
    if (len < sizeof h)
        return -EINVAL;
    memcpy(&h, buf, sizeof h);
    if (h.magic != SYNC_MAGIC || h.format != SYNC_FORMAT)
        return -EINVAL;
    s->applied = h.applied;
    s->table_version = h.table_version;
    const unsigned char *b = buf;
    int r = decode_records(b + sizeof h, b + len, s);
    if (r < 0)
        sync_state_free(s);
    return r;
}

void policing_idents_free(struct policing_idents *id)
{
    free(id->owners);
    free(id->quotas);
    free(id->tokens);
    *id = (struct policing_idents){0};
}

void sync_state_free(struct sync_state *s)
{
    free(s->vols);
    s->vols = NULL;
    s->nvols = 0;
    free(s->snaps);
    s->snaps = NULL;
    s->nsnaps = 0;
    free(s->fences);
    s->fences = NULL;
    s->nfences = 0;
    free(s->grants);
    s->grants = NULL;
    s->ngrants = 0;
    policing_idents_free(&s->idents);
}

/* ---- pieces --------------------------------------------------------------- */

uint32_t sync_crc(const void *buf, size_t len)
{
    /* ISA-L works on the raw register: the standard pre- and post-inversion
     * are ours to apply. len fits an int (PMSG_STREAM_MAX). */
    return ~crc32_iscsi((unsigned char *)buf, (int)len, ~0u);
}

uint32_t sync_pieces(size_t len)
{
    return len == 0 ? 1 : (uint32_t)((len + PMSG_PART_MAX - 1) / PMSG_PART_MAX);
}

size_t sync_piece(const void *buf, size_t len, uint64_t stream, uint32_t crc, uint32_t seq,
                  struct pmsg_state_part *msg)
{
    size_t off = (size_t)seq * PMSG_PART_MAX;
    size_t n = len - off < PMSG_PART_MAX ? len - off : PMSG_PART_MAX;
    size_t total = sizeof *msg + n;
    pmsg_init(&msg->h, PMSG_STATE_PART, sizeof *msg);
    msg->h.length = (uint32_t)total;
    msg->stream = stream;
    msg->seq = seq;
    msg->last = seq + 1 == sync_pieces(len);
    msg->total = (uint32_t)len;
    msg->crc = crc;
    memcpy(msg + 1, (const unsigned char *)buf + off, n);
    return total;
}

void sync_assembly_reset(struct sync_assembly *a)
{
    free(a->buf);
    *a = (struct sync_assembly){0};
}

static int fail(struct sync_assembly *a, uint64_t stream, int err)
{
    sync_assembly_reset(a);
    a->failed = true;
    a->stream = stream;
    return err;
}

/* Room for n more bytes, growing by doubling up to the stream's length:
 * memory follows what has arrived, not what the first piece claims. */
static int reserve(struct sync_assembly *a, size_t n)
{
    if (a->len + n <= a->cap)
        return 0;
    size_t cap = a->cap ? 2 * a->cap : PMSG_PART_MAX;
    if (cap < a->len + n)
        cap = a->len + n;
    if (cap > a->total)
        cap = a->total;
    unsigned char *b = realloc(a->buf, cap);
    if (!b)
        return -ENOMEM;
    a->buf = b;
    a->cap = cap;
    return 0;
}

int sync_assembly_add(struct sync_assembly *a, const struct pmsg_state_part *p, size_t len)
{
    size_t n = len - sizeof *p;
    if (p->seq == 0) { /* a new stream supersedes a partial one */
        sync_assembly_reset(a);
        *a = (struct sync_assembly){
            .active = true, .stream = p->stream, .total = p->total, .crc = p->crc};
    } else if (!a->active) {
        return a->failed && a->stream == p->stream ? 0 : fail(a, p->stream, -EPROTO);
    } else if (p->stream != a->stream || p->seq != a->next || p->total != a->total ||
               p->crc != a->crc) {
        return fail(a, p->stream, -EPROTO);
    }
    if (a->total > PMSG_STREAM_MAX || a->len + n > a->total)
        return fail(a, p->stream, -EFBIG);
    if (reserve(a, n) < 0)
        return fail(a, p->stream, -ENOMEM);
    memcpy(a->buf + a->len, p + 1, n);
    a->len += n;
    a->next++;
    if (!p->last)
        return 0;
    if (a->len != a->total)
        return fail(a, p->stream, -EPROTO);
    if (sync_crc(a->buf, a->len) != a->crc)
        return fail(a, p->stream, -EBADMSG);
    a->active = false;
    return 1;
}
