/* test_syncstream.c - the sync round's state stream (policing/syncstream.c):
 * a state comes back equal through encode, pieces, assembly and decode;
 * a missing, repeated or foreign piece, a corrupted byte and a stream
 * over the limit are refused, and the rest of a refused stream ignored;
 * a record of an unknown type is skipped by its length; malformed
 * streams are refused. */
#include "policing/syncstream.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char regions[] = "region table bytes, opaque here";

/* A state of n volumes, 2 services, and the region bytes above. */
/* Rollback fences and grants: the state's own, not malloc'd. */
static struct policing_fence fences[2];
static struct policing_grant grants[2];
/* Owners, quotas and tokens likewise. */
static struct policing_owner owners[2];
static struct policing_quota quotas[2];
static struct policing_token tokens[2];

static struct sync_state make_state(size_t n)
{
    struct sync_state s = {.applied = 17, .table_version = 4242, .nvols = n};
    s.vols = calloc(n ? n : 1, sizeof *s.vols);
    cr_assert(s.vols != NULL);
    for (size_t i = 0; i < n; i++) {
        struct policing_volume *v = &s.vols[i];
        snprintf(v->uuid, sizeof v->uuid, "%08zx-1111-4000-8000-%012zu", i + 1, i);
        snprintf(v->name, sizeof v->name, "vol%zu", i);
        v->size = (uint64_t)(i + 1) << 30;
        v->generation = i;
        v->nreplicas = (uint32_t)(i % (PMSG_REPLICAS_MAX + 1));
        for (uint32_t j = 0; j < v->nreplicas; j++)
            v->replicas[j] = (struct policing_replica){j + 1, (uint8_t)(j % 4)};
    }
    s.services.n = 2;
    s.services.v[0] = (struct svc_entry){.owner = 1, .holder = 2, .manual = true};
    strcpy(s.services.v[0].addr, "10.0.0.1/24");
    s.services.v[1] = (struct svc_entry){.owner = 2, .holder = 2};
    strcpy(s.services.v[1].addr, "10.0.0.2/24");
    s.regions = regions;
    s.regions_len = sizeof regions;
    /* A snapshot of every other volume, and the group's last cut. */
    s.snaps = calloc(n / 2 + 1, sizeof *s.snaps);
    cr_assert(s.snaps != NULL);
    for (size_t i = 0; i < n; i += 2) {
        struct policing_snap *p = &s.snaps[s.nsnaps++];
        memcpy(p->uuid, s.vols[i].uuid, sizeof p->uuid);
        snprintf(p->name, sizeof p->name, "nightly-%zu", i);
        p->id = 100 + i;
        p->time = 1796600000 + (int64_t)i;
        p->size = s.vols[i].size;
    }
    s.last_cut = 100 + n;
    /* The first two volumes fenced for rollbacks by nodes 3 and 1. */
    for (size_t i = 0; i < n && i < 2; i++) {
        fences[i] = (struct policing_fence){.node = i == 0 ? 3 : 1};
        memcpy(fences[i].uuid, s.vols[i].uuid, sizeof fences[i].uuid);
    }
    s.fences = fences;
    s.nfences = n < 2 ? n : 2;
    /* The first volume granted to a PSK user read-write and to a
     * certificate read-only. */
    for (size_t i = 0; i < n && i < 2; i++) {
        grants[i] = (struct policing_grant){.read_only = i == 1};
        memcpy(grants[i].uuid, s.vols[0].uuid, sizeof grants[i].uuid);
        strcpy(grants[i].identity, i == 0 ? "alice" : "dn:CN=bob\\, jr,O=Example");
    }
    s.grants = grants;
    s.ngrants = n < 2 ? n : 2;
    /* The first volume owned by a PSK user, the second by a certificate;
     * a quota for each; a token for each. */
    for (size_t i = 0; i < n && i < 2; i++) {
        const char *who = i == 0 ? "alice" : "dn:CN=carol,O=Example";
        memcpy(owners[i].uuid, s.vols[i].uuid, sizeof owners[i].uuid);
        strcpy(owners[i].identity, who);
        quotas[i] =
            (struct policing_quota){.limit = (uint64_t)(i + 1) << 40, .volumes = (uint32_t)i + 1};
        strcpy(quotas[i].identity, who);
        tokens[i] = (struct policing_token){.created = 1796600000 + (int64_t)i};
        snprintf(tokens[i].id, sizeof tokens[i].id, "%016zx", i + 0xabc);
        strcpy(tokens[i].identity, who);
        memset(tokens[i].hash, (int)(0x5a + i), sizeof tokens[i].hash);
    }
    s.idents = (struct policing_idents){owners,        n < 2 ? n : 2, quotas,
                                        n < 2 ? n : 2, tokens,        n < 2 ? n : 2};
    return s;
}

static void expect_equal(const struct sync_state *a, const struct sync_state *b)
{
    cr_expect(eq(u64, a->applied, b->applied));
    cr_expect(eq(u64, a->table_version, b->table_version));
    cr_assert(eq(sz, a->nvols, b->nvols));
    for (size_t i = 0; i < a->nvols; i++)
        cr_assert(eq(int, memcmp(&a->vols[i], &b->vols[i], sizeof a->vols[i]), 0), "volume %zu", i);
    cr_expect(eq(sz, a->services.n, b->services.n));
    cr_expect(
        eq(int, memcmp(a->services.v, b->services.v, a->services.n * sizeof a->services.v[0]), 0));
    cr_assert(eq(sz, a->regions_len, b->regions_len));
    cr_expect(eq(int, memcmp(a->regions, b->regions, a->regions_len), 0));
    cr_assert(eq(sz, a->nsnaps, b->nsnaps));
    for (size_t i = 0; i < a->nsnaps; i++)
        cr_assert(eq(int, memcmp(&a->snaps[i], &b->snaps[i], sizeof a->snaps[i]), 0),
                  "snapshot %zu", i);
    cr_expect(eq(u64, a->last_cut, b->last_cut));
    cr_assert(eq(sz, a->nfences, b->nfences));
    for (size_t i = 0; i < a->nfences; i++) {
        cr_expect(eq(str, (char *)a->fences[i].uuid, (char *)b->fences[i].uuid), "fence %zu", i);
        cr_expect(eq(u32, a->fences[i].node, b->fences[i].node), "fence %zu", i);
    }
    cr_assert(eq(sz, a->ngrants, b->ngrants));
    for (size_t i = 0; i < a->ngrants; i++)
        cr_expect(eq(int, memcmp(&a->grants[i], &b->grants[i], sizeof a->grants[i]), 0),
                  "grant %zu", i);
    const struct policing_idents *x = &a->idents, *y = &b->idents;
    cr_assert(eq(sz, x->nowners, y->nowners));
    cr_assert(eq(sz, x->nquotas, y->nquotas));
    cr_assert(eq(sz, x->ntokens, y->ntokens));
    for (size_t i = 0; i < x->nowners; i++)
        cr_expect(eq(int, memcmp(&x->owners[i], &y->owners[i], sizeof x->owners[i]), 0),
                  "owner %zu", i);
    /* Field by field: a quota's padding is not part of it. */
    for (size_t i = 0; i < x->nquotas; i++) {
        const struct policing_quota *q = &x->quotas[i], *r = &y->quotas[i];
        cr_expect(eq(str, (char *)q->identity, (char *)r->identity), "quota %zu", i);
        cr_expect(eq(u64, q->limit, r->limit), "quota %zu", i);
        cr_expect(eq(u32, q->volumes, r->volumes), "quota %zu", i);
    }
    for (size_t i = 0; i < x->ntokens; i++) {
        const struct policing_token *t = &x->tokens[i], *u = &y->tokens[i];
        cr_expect(eq(str, (char *)t->id, (char *)u->id), "token %zu", i);
        cr_expect(eq(str, (char *)t->identity, (char *)u->identity), "token %zu", i);
        cr_expect(eq(int, memcmp(t->hash, u->hash, sizeof t->hash), 0), "token %zu", i);
        cr_expect(eq(i64, t->created, u->created), "token %zu", i);
    }
}

/* Every piece of a stream, as pmsg_check accepts them. */
struct pieces {
    struct pmsg_state_part *msg[64];
    size_t len[64];
    uint32_t n;
};

static void cut(const void *buf, size_t len, uint64_t stream, struct pieces *p)
{
    p->n = sync_pieces(len);
    cr_assert(le(u32, p->n, 64));
    uint32_t crc = sync_crc(buf, len);
    for (uint32_t i = 0; i < p->n; i++) {
        p->msg[i] = malloc(sizeof *p->msg[i] + PMSG_PART_MAX);
        cr_assert(p->msg[i] != NULL);
        p->len[i] = sync_piece(buf, len, stream, crc, i, p->msg[i]);
        const char *why = "";
        cr_assert(eq(int, pmsg_check(p->msg[i], p->len[i], &why), PMSG_STATE_PART), "piece %u: %s",
                  i, why);
    }
}

static void free_pieces(struct pieces *p)
{
    for (uint32_t i = 0; i < p->n; i++)
        free(p->msg[i]);
}

static void *encode(const struct sync_state *s, size_t *len)
{
    void *buf;
    cr_assert(eq(int, sync_encode(s, &buf, len), 0));
    return buf;
}

Test(syncstream, a_state_over_several_pieces_comes_back_equal)
{
    struct sync_state s = make_state(20000); /* about 5 MiB */
    size_t len;
    void *buf = encode(&s, &len);
    struct pieces p;
    cut(buf, len, 7, &p);
    cr_assert(gt(u32, p.n, 4), "%u pieces", p.n);
    for (uint32_t i = 0; i < p.n; i++)
        cr_assert(le(sz, p.len[i], (size_t)CLUSTER_MSG_MAX / 4 + sizeof(struct pmsg_state_part)));

    struct sync_assembly a = {0};
    for (uint32_t i = 0; i + 1 < p.n; i++)
        cr_assert(eq(int, sync_assembly_add(&a, p.msg[i], p.len[i]), 0), "piece %u", i);
    cr_assert(eq(int, sync_assembly_add(&a, p.msg[p.n - 1], p.len[p.n - 1]), 1));
    cr_assert(eq(sz, a.len, len));
    struct sync_state got;
    cr_assert(eq(int, sync_decode(a.buf, a.len, &got), 0));
    expect_equal(&s, &got);
    cr_expect(eq(sz, got.skipped, 0));
    sync_state_free(&got);
    sync_assembly_reset(&a);
    free_pieces(&p);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, an_empty_table_is_one_piece)
{
    struct sync_state s = make_state(0), got;
    size_t len;
    void *buf = encode(&s, &len);
    struct pieces p;
    cut(buf, len, 1, &p);
    cr_assert(eq(u32, p.n, 1));
    cr_expect(eq(int, p.msg[0]->last, 1));
    struct sync_assembly a = {0};
    cr_assert(eq(int, sync_assembly_add(&a, p.msg[0], p.len[0]), 1));
    cr_assert(eq(int, sync_decode(a.buf, a.len, &got), 0));
    expect_equal(&s, &got);
    sync_state_free(&got);
    sync_assembly_reset(&a);
    free_pieces(&p);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

/* Feeds pieces in the order given; returns the first nonzero result. */
static int feed(struct sync_assembly *a, struct pieces *p, const uint32_t *order, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = sync_assembly_add(a, p->msg[order[i]], p->len[order[i]]);
        if (r != 0)
            return r;
    }
    return 0;
}

Test(syncstream, sequence_errors_are_refused)
{
    struct sync_state s = make_state(5000);
    size_t len;
    void *buf = encode(&s, &len);
    struct pieces p, other;
    cut(buf, len, 3, &p);
    cut(buf, len, 4, &other);
    cr_assert(ge(u32, p.n, 3));
    struct sync_assembly a = {0};

    cr_expect(eq(int, feed(&a, &p, (uint32_t[]){0, 2}, 2), -EPROTO), "a piece missing");
    /* The rest of the refused stream is ignored, not refused again. */
    cr_expect(eq(int, sync_assembly_add(&a, p.msg[1], p.len[1]), 0));
    cr_expect(eq(int, sync_assembly_add(&a, p.msg[p.n - 1], p.len[p.n - 1]), 0));

    sync_assembly_reset(&a);
    cr_expect(eq(int, feed(&a, &p, (uint32_t[]){0, 1, 1}, 3), -EPROTO), "a piece repeated");
    sync_assembly_reset(&a);
    cr_expect(eq(int, feed(&a, &p, (uint32_t[]){1}, 1), -EPROTO), "no first piece");
    sync_assembly_reset(&a);
    cr_expect(eq(int, sync_assembly_add(&a, p.msg[0], p.len[0]), 0));
    cr_expect(eq(int, sync_assembly_add(&a, other.msg[1], other.len[1]), -EPROTO),
              "another stream's piece");

    /* A new stream starts over, and completes. */
    sync_assembly_reset(&a);
    cr_expect(eq(int, sync_assembly_add(&a, p.msg[0], p.len[0]), 0));
    int r = 0;
    for (uint32_t i = 0; i < other.n && r == 0; i++)
        r = sync_assembly_add(&a, other.msg[i], other.len[i]);
    cr_expect(eq(int, r, 1));
    sync_assembly_reset(&a);
    free_pieces(&p);
    free_pieces(&other);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, a_corrupted_byte_fails_the_crc)
{
    struct sync_state s = make_state(3000);
    size_t len;
    void *buf = encode(&s, &len);
    struct pieces p;
    cut(buf, len, 9, &p);
    ((unsigned char *)(p.msg[1] + 1))[1000] ^= 0x40;
    struct sync_assembly a = {0};
    int r = 0;
    for (uint32_t i = 0; i < p.n && r == 0; i++)
        r = sync_assembly_add(&a, p.msg[i], p.len[i]);
    cr_expect(eq(int, r, -EBADMSG));
    cr_expect(eq(ptr, a.buf, NULL), "a refused stream's memory is freed");
    free_pieces(&p);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, oversize_streams_are_refused)
{
    /* pmsg_check drops a piece claiming more than PMSG_STREAM_MAX... */
    struct pmsg_state_part *m = calloc(1, sizeof *m + PMSG_PART_MAX);
    cr_assert(m != NULL);
    pmsg_init(&m->h, PMSG_STATE_PART, sizeof *m + PMSG_PART_MAX);
    m->total = PMSG_STREAM_MAX + 1;
    const char *why = "";
    cr_expect(eq(int, pmsg_check(m, sizeof *m + PMSG_PART_MAX, &why), -1));
    /* ...and the assembly holds no more than it either way. */
    struct sync_assembly a = {0};
    cr_expect(eq(int, sync_assembly_add(&a, m, sizeof *m + PMSG_PART_MAX), -EFBIG));
    cr_expect(eq(ptr, a.buf, NULL));
    free(m);
}

/* Appends a record to a stream in buf (room enough); returns the end. */
static size_t append_record(unsigned char *buf, size_t at, uint16_t type, const void *body,
                            uint32_t len)
{
    struct sync_record r = {type, len};
    memcpy(buf + at, &r, sizeof r);
    memcpy(buf + at + sizeof r, body, len);
    return at + sizeof r + len;
}

Test(syncstream, an_unknown_record_type_is_skipped)
{
    struct sync_state s = make_state(3), got;
    size_t len;
    unsigned char *buf = encode(&s, &len);
    unsigned char *more = malloc(len + 200);
    cr_assert(more != NULL);
    /* A newer vsan's records, before and after the region table. */
    size_t hdr = sizeof(struct sync_header);
    memcpy(more, buf, hdr);
    size_t at = append_record(more, hdr, 99, "snapshot of vol0, say", 21);
    memcpy(more + at, buf + hdr, len - hdr);
    at += len - hdr;
    at = append_record(more, at, 0xffff, "", 0);
    cr_assert(eq(int, sync_decode(more, at, &got), 0));
    expect_equal(&s, &got);
    cr_expect(eq(sz, got.skipped, 2));
    sync_state_free(&got);
    free(more);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, malformed_streams_are_refused)
{
    struct sync_state s = make_state(2), got;
    size_t len;
    unsigned char *buf = encode(&s, &len);
    size_t hdr = sizeof(struct sync_header);

    cr_expect(eq(int, sync_decode(buf, len - 1, &got), -EINVAL), "a record cut short");
    struct sync_header h;
    memcpy(&h, buf, sizeof h);
    h.format = SYNC_FORMAT + 1;
    memcpy(buf, &h, sizeof h);
    cr_expect(eq(int, sync_decode(buf, len, &got), -EINVAL), "another format");
    h.format = SYNC_FORMAT;
    memcpy(buf, &h, sizeof h);

    /* A replica set first, with no volume before it. */
    unsigned char *bad = malloc(len + 100);
    cr_assert(bad != NULL);
    memcpy(bad, buf, hdr);
    struct sync_rec_replicas rs = {.count = 0};
    size_t at = append_record(bad, hdr, SYNC_REC_REPLICAS, &rs, sizeof rs);
    memcpy(bad + at, buf + hdr, len - hdr);
    cr_expect(eq(int, sync_decode(bad, at + len - hdr, &got), -EINVAL), "replicas out of place");

    /* No region table. */
    struct sync_rec_volume rv = {.uuid = "u", .name = "n"};
    at = append_record(bad, hdr, SYNC_REC_VOLUME, &rv, sizeof rv);
    cr_expect(eq(int, sync_decode(bad, at, &got), -EINVAL), "no region table");

    /* A volume name without its NUL. */
    memset(rv.name, 'x', sizeof rv.name);
    at = append_record(bad, hdr, SYNC_REC_VOLUME, &rv, sizeof rv);
    at = append_record(bad, at, SYNC_REC_REGIONS, "", 0);
    cr_expect(eq(int, sync_decode(bad, at, &got), -EINVAL), "an unterminated name");
    free(bad);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, a_fence_without_a_node_is_dropped)
{
    struct sync_state s = make_state(0), got;
    size_t len;
    unsigned char *buf = encode(&s, &len);
    unsigned char *more = malloc(len + 200);
    cr_assert(more != NULL);
    size_t hdr = sizeof(struct sync_header);
    memcpy(more, buf, hdr);
    struct sync_rec_fence bad = {.uuid = "u1", .node = 0}, good = {.uuid = "u2", .node = 2};
    size_t at = append_record(more, hdr, SYNC_REC_FENCE, &bad, sizeof bad);
    at = append_record(more, at, SYNC_REC_FENCE, &good, sizeof good);
    memcpy(more + at, buf + hdr, len - hdr);
    at += len - hdr;
    cr_assert(eq(int, sync_decode(more, at, &got), 0));
    cr_assert(eq(sz, got.nfences, 1));
    cr_expect(eq(str, got.fences[0].uuid, "u2"));
    cr_expect(eq(u32, got.fences[0].node, 2));
    sync_state_free(&got);
    free(more);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, a_grant_without_an_identity_or_with_a_bad_mode_is_dropped)
{
    struct sync_state s = make_state(0), got;
    size_t len;
    unsigned char *buf = encode(&s, &len);
    unsigned char *more = malloc(len + 3 * sizeof(struct sync_rec_grant) + 100);
    cr_assert(more != NULL);
    size_t hdr = sizeof(struct sync_header);
    memcpy(more, buf, hdr);
    struct sync_rec_grant none = {.uuid = "u1"}, mode = {.uuid = "u1", .read_only = 2},
                          good = {.uuid = "u2", .read_only = 1};
    strcpy(mode.identity, "alice");
    strcpy(good.identity, "bob");
    size_t at = append_record(more, hdr, SYNC_REC_GRANT, &none, sizeof none);
    at = append_record(more, at, SYNC_REC_GRANT, &mode, sizeof mode);
    at = append_record(more, at, SYNC_REC_GRANT, &good, sizeof good);
    memcpy(more + at, buf + hdr, len - hdr);
    at += len - hdr;
    cr_assert(eq(int, sync_decode(more, at, &got), 0));
    cr_assert(eq(sz, got.ngrants, 1));
    cr_expect(eq(str, got.grants[0].uuid, "u2"));
    cr_expect(eq(str, got.grants[0].identity, "bob"));
    cr_expect(eq(u8, got.grants[0].read_only, 1));
    sync_state_free(&got);
    free(more);
    free(buf);
    free(s.vols);
    free(s.snaps);
}

Test(syncstream, malformed_owners_quotas_and_tokens_are_dropped)
{
    struct sync_state s = make_state(0), got;
    size_t len;
    unsigned char *buf = encode(&s, &len);
    unsigned char *more = malloc(len + 8 * sizeof(struct sync_rec_token) + 200);
    cr_assert(more != NULL);
    size_t hdr = sizeof(struct sync_header);
    memcpy(more, buf, hdr);
    struct sync_rec_owner no_owner = {.uuid = "u1"}, owner = {.uuid = "u2", .identity = "bob"};
    struct sync_rec_quota zero = {.limit = 0, .volumes = 1, .identity = "bob"};
    struct sync_rec_quota no_count = {.limit = 512, .identity = "bob"};
    struct sync_rec_quota quota = {.limit = 512, .volumes = 3},
                          no_id = {.limit = 4096, .volumes = 1};
    strcpy(quota.identity, "bob");
    struct sync_rec_token no_tid = {.identity = "bob"}, token = {.id = "00000000000000ff"};
    strcpy(token.identity, "bob");
    size_t at = append_record(more, hdr, SYNC_REC_OWNER, &no_owner, sizeof no_owner);
    at = append_record(more, at, SYNC_REC_OWNER, &owner, sizeof owner);
    at = append_record(more, at, SYNC_REC_QUOTA, &zero, sizeof zero);
    at = append_record(more, at, SYNC_REC_QUOTA, &no_count, sizeof no_count);
    at = append_record(more, at, SYNC_REC_QUOTA, &no_id, sizeof no_id);
    at = append_record(more, at, SYNC_REC_QUOTA, &quota, sizeof quota);
    at = append_record(more, at, SYNC_REC_TOKEN, &no_tid, sizeof no_tid);
    at = append_record(more, at, SYNC_REC_TOKEN, &token, sizeof token);
    memcpy(more + at, buf + hdr, len - hdr);
    at += len - hdr;
    cr_assert(eq(int, sync_decode(more, at, &got), 0));
    cr_assert(eq(sz, got.idents.nowners, 1));
    cr_expect(eq(str, got.idents.owners[0].uuid, "u2"));
    cr_assert(eq(sz, got.idents.nquotas, 1));
    cr_expect(eq(u64, got.idents.quotas[0].limit, 512));
    cr_expect(eq(u32, got.idents.quotas[0].volumes, 3));
    cr_assert(eq(sz, got.idents.ntokens, 1));
    cr_expect(eq(str, got.idents.tokens[0].id, "00000000000000ff"));
    sync_state_free(&got);
    /* A record cut short is a malformed stream. */
    at = append_record(more, hdr, SYNC_REC_TOKEN, &token, sizeof token - 1);
    memcpy(more + at, buf + hdr, len - hdr);
    cr_expect(eq(int, sync_decode(more, at + len - hdr, &got), -EINVAL));
    free(more);
    free(buf);
    free(s.vols);
    free(s.snaps);
}
