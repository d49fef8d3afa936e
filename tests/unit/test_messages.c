/* test_messages.c - the framing checks of the policing messages
 * (policing/messages.c): every type is accepted at its own length and
 * dropped at any other, with the reason; a foreign magic, another
 * protocol version, an unknown type and a length field that disagrees
 * are dropped too, and a LOST whose count overruns it; a STATE_PART is
 * accepted only where its bytes fit the piece and stream limits and its
 * place in the stream. */
#include "policing/messages.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <string.h>

static const struct {
    enum pmsg_type type;
    size_t len;
} fixed[] = {
    {PMSG_HELLO, sizeof(struct pmsg_hello)},       {PMSG_REQUEST, sizeof(struct pmsg_region)},
    {PMSG_RELEASE, sizeof(struct pmsg_region)},    {PMSG_VOL_CREATE, sizeof(struct pmsg_volume)},
    {PMSG_VOL_DELETE, sizeof(struct pmsg_volume)}, {PMSG_OFFER, sizeof(struct pmsg_offer)},
    {PMSG_REPLICA, sizeof(struct pmsg_replica)},   {PMSG_SERVICE, sizeof(struct pmsg_service)},
};

static unsigned char buf[4096];

/* A message of type with its header saying len, len bytes long. */
static int check(enum pmsg_type type, size_t len, const char **why)
{
    const char *ignored;
    memset(buf, 0, sizeof buf);
    pmsg_init((struct pmsg_header *)buf, type, len);
    return pmsg_check(buf, len, why ? why : &ignored);
}

Test(messages, every_type_at_its_length)
{
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const char *why = NULL;
        cr_expect(eq(int, check(fixed[i].type, fixed[i].len, &why), (int)fixed[i].type),
                  "type %d: %s", fixed[i].type, why ? why : "");
    }
}

Test(messages, every_type_at_another_length)
{
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        for (int d = -1; d <= 1; d += 2) {
            const char *why = NULL;
            cr_expect(eq(int, check(fixed[i].type, fixed[i].len + (size_t)d, &why), -1),
                      "type %d, %d byte(s) off, accepted", fixed[i].type, d);
            cr_expect(eq(str, (char *)why, "wrong length for its type"));
        }
    }
}

Test(messages, replica_layout_is_packed)
{
    struct pmsg_replica m;
    pmsg_init(&m.h, PMSG_REPLICA, sizeof m);
    m.tag = 9;
    m.volume = 0x12b15f85;
    m.node = 3;
    m.state = 1;
    m.first = 7;
    m.last = 8;
    const char *why;
    cr_assert(eq(int, pmsg_check(&m, sizeof m, &why), PMSG_REPLICA));
    /* The wire layout does not depend on the compiler's padding. */
    cr_expect(eq(sz, sizeof m, sizeof(struct pmsg_header) + 8 + 4 + 4 + 1 + 8 + 8));
}

Test(messages, grant_is_fixed_length)
{
    struct pmsg_grant m;
    pmsg_init(&m.h, PMSG_GRANT, sizeof m);
    const char *why;
    cr_assert(eq(int, pmsg_check(&m, sizeof m, &why), PMSG_GRANT));
    cr_expect(eq(sz, sizeof m,
                 sizeof(struct pmsg_header) + 8 + 1 + PMSG_NAME_MAX + 1 + PMSG_IDENTITY_MAX + 1));
    pmsg_init(&m.h, PMSG_GRANT, sizeof m - 1);
    cr_expect(eq(int, pmsg_check(&m, sizeof m - 1, &why), -1), "a short grant");
}

Test(messages, quota_and_token_are_fixed_length)
{
    const char *why;
    struct pmsg_quota q;
    pmsg_init(&q.h, PMSG_QUOTA, sizeof q);
    cr_assert(eq(int, pmsg_check(&q, sizeof q, &why), PMSG_QUOTA));
    cr_expect(eq(sz, sizeof q, sizeof(struct pmsg_header) + 8 + 8 + 4 + PMSG_IDENTITY_MAX + 1));
    pmsg_init(&q.h, PMSG_QUOTA, sizeof q - 1);
    cr_expect(eq(int, pmsg_check(&q, sizeof q - 1, &why), -1), "a short quota");
    struct pmsg_token t;
    pmsg_init(&t.h, PMSG_TOKEN, sizeof t);
    cr_assert(eq(int, pmsg_check(&t, sizeof t, &why), PMSG_TOKEN));
    cr_expect(eq(sz, sizeof t,
                 sizeof(struct pmsg_header) + 8 + 1 + PMSG_TOKEN_ID_LEN + 1 + 8 +
                     PMSG_TOKEN_HASH_LEN + PMSG_IDENTITY_MAX + 1));
    pmsg_init(&t.h, PMSG_TOKEN, sizeof t + 1);
    cr_expect(eq(int, pmsg_check(&t, sizeof t + 1, &why), -1), "a long token");
    /* A CREATE carries its owner (version 9) and its placed set (10); it
     * lost RESIZE's force (11). */
    struct pmsg_volume v;
    pmsg_init(&v.h, PMSG_VOL_CREATE, sizeof v);
    cr_assert(eq(int, pmsg_check(&v, sizeof v, &why), PMSG_VOL_CREATE));
    cr_expect(eq(sz, sizeof v,
                 sizeof(struct pmsg_header) + 8 + PMSG_UUID_LEN + 1 + PMSG_NAME_MAX + 1 + 8 +
                     PMSG_IDENTITY_MAX + 1 + 1 + 4 + 4 * PMSG_REPLICAS_MAX));
    cr_expect(eq(u16, v.h.version, 12));
    struct pmsg_capacity c;
    pmsg_init(&c.h, PMSG_CAPACITY, sizeof c);
    cr_assert(eq(int, pmsg_check(&c, sizeof c, &why), PMSG_CAPACITY));
    cr_expect(eq(sz, sizeof c, sizeof(struct pmsg_header) + 3 * 8));
    pmsg_init(&c.h, PMSG_CAPACITY, sizeof c - 1);
    cr_expect(eq(int, pmsg_check(&c, sizeof c - 1, &why), -1), "a short capacity");
    struct pmsg_outdate o;
    pmsg_init(&o.h, PMSG_OUTDATE, sizeof o);
    cr_assert(eq(int, pmsg_check(&o, sizeof o, &why), PMSG_OUTDATE));
    cr_expect(eq(sz, sizeof o, sizeof(struct pmsg_header) + 8 + 3 * 4 + 2 * 8));
}

/* A resize is a cut that carries its change (version 11): CUT_BEGIN ends
 * with the configuration; RESIZE is no message any more. A replica added
 * or removed is one too (12: op, node, min_current). */
Test(messages, a_cut_begin_carries_a_configuration_change)
{
    const char *why;
    struct pmsg_cut_begin m;
    pmsg_init(&m.h, PMSG_CUT_BEGIN, sizeof m);
    cr_assert(eq(int, pmsg_check(&m, sizeof m, &why), PMSG_CUT_BEGIN));
    cr_expect(
        eq(sz, sizeof(struct pmsg_cut_config), PMSG_UUID_LEN + 1 + 8 + 1 + 1 + 1 + 4 + 1 + 4));
    cr_expect(eq(sz, sizeof m,
                 sizeof(struct pmsg_header) + 8 + 8 + 8 + 1 + PMSG_NAME_MAX + 1 + 4 +
                     PMSG_CUT_VOLUMES * (PMSG_NAME_MAX + 1) + sizeof(struct pmsg_cut_config)));
    struct pmsg_header h;
    pmsg_init(&h, 5, sizeof h);
    cr_expect(eq(int, pmsg_check(&h, sizeof h, &why), -1), "type 5 (RESIZE until version 11)");
}

Test(messages, heartbeat_is_fixed_length)
{
    struct pmsg_heartbeat m;
    pmsg_init(&m.h, PMSG_HEARTBEAT, sizeof m);
    m.sent_ms = 12345;
    const char *why;
    cr_assert(eq(int, pmsg_check(&m, sizeof m, &why), PMSG_HEARTBEAT));
    cr_expect(eq(sz, sizeof m, sizeof(struct pmsg_header) + 8));
    pmsg_init(&m.h, PMSG_HEARTBEAT, sizeof m - 1);
    cr_expect(eq(int, pmsg_check(&m, sizeof m - 1, &why), -1), "a short heartbeat");
}

static void expect_dropped(size_t len, const char *reason)
{
    const char *why = NULL;
    cr_expect(eq(int, pmsg_check(buf, len, &why), -1));
    cr_expect(eq(str, (char *)why, (char *)reason));
}

Test(messages, foreign_or_malformed_headers)
{
    check(PMSG_REPLICA, sizeof(struct pmsg_replica), NULL);
    struct pmsg_header *h = (struct pmsg_header *)buf;
    h->magic ^= 1;
    expect_dropped(sizeof(struct pmsg_replica), "not a policing message");
    expect_dropped(sizeof *h - 1, "not a policing message");

    check(PMSG_REPLICA, sizeof(struct pmsg_replica), NULL);
    h->version = PMSG_VERSION - 1;
    expect_dropped(sizeof(struct pmsg_replica), "unknown protocol version");

    check(PMSG_REPLICA, sizeof(struct pmsg_replica), NULL);
    h->length++;
    expect_dropped(sizeof(struct pmsg_replica), "length field disagrees with the message");

    check(PMSG_REPLICA, sizeof(struct pmsg_replica), NULL);
    h->type = PMSG_PROGRESS + 1;
    expect_dropped(sizeof(struct pmsg_replica), "unknown message type");
}

/* A STATE_PART of data bytes at sequence seq of a total-byte stream. */
static int part(uint32_t seq, size_t data, uint32_t total, uint8_t last, const char **why)
{
    static unsigned char big[sizeof(struct pmsg_state_part) + PMSG_PART_MAX + 1];
    struct pmsg_state_part *p = (struct pmsg_state_part *)big;
    pmsg_init(&p->h, PMSG_STATE_PART, sizeof *p + data);
    p->seq = seq;
    p->total = total;
    p->last = last;
    return pmsg_check(big, sizeof *p + data, why);
}

Test(messages, state_part_framing)
{
    const char *why = NULL;
    const size_t max = PMSG_PART_MAX;
    cr_expect(eq(int, part(0, 1, 1, 1, &why), PMSG_STATE_PART), "%s", why);
    cr_expect(eq(int, part(0, max, 3 * max - 5, 0, &why), PMSG_STATE_PART), "%s", why);
    cr_expect(eq(int, part(2, max - 5, 3 * max - 5, 1, &why), PMSG_STATE_PART), "%s", why);
    cr_expect(eq(int, part(0, max, PMSG_STREAM_MAX, 0, &why), PMSG_STATE_PART), "%s", why);

    cr_expect(eq(int, part(0, 0, 0, 1, &why), -1), "no bytes");
    cr_expect(eq(str, (char *)why, "malformed STATE_PART"));
    cr_expect(eq(int, part(0, max + 1, max + 1, 1, &why), -1), "over the piece size");
    cr_expect(eq(int, part(0, max - 1, 2 * max, 0, &why), -1), "a short piece before the last");
    cr_expect(eq(int, part(1, 10, 3 * max, 1, &why), -1), "last, ending before the total");
    cr_expect(eq(int, part(2, max, 2 * max, 0, &why), -1), "not last, reaching the total");
    cr_expect(eq(int, part(0, 10, 10, 2, &why), -1), "a last flag that is not 0 or 1");
    cr_expect(eq(int, part(0, max, PMSG_STREAM_MAX + 1, 0, &why), -1), "over the stream limit");
    cr_expect(eq(str, (char *)why, "malformed STATE_PART"));
}

Test(messages, the_old_state_message_is_gone)
{
    /* Version 3's STATE (type 8) names nothing in version 4. */
    memset(buf, 0, sizeof buf);
    pmsg_init((struct pmsg_header *)buf, 8, 64);
    expect_dropped(64, "unknown message type");
}

Test(messages, lost_count_must_match_its_length)
{
    size_t len = sizeof(struct pmsg_lost) + 3 * sizeof(struct pmsg_lost_key);
    const char *why = NULL;
    check(PMSG_LOST, len, NULL);
    struct pmsg_lost *m = (struct pmsg_lost *)buf;
    m->n = 3;
    cr_expect(eq(int, pmsg_check(buf, len, &why), PMSG_LOST), "%s", why ? why : "");
    m->n = 2;
    expect_dropped(len, "malformed LOST");
    m->n = 4;
    expect_dropped(len, "malformed LOST");
    m->n = UINT32_MAX;
    expect_dropped(len, "malformed LOST");
    check(PMSG_LOST, sizeof(struct pmsg_lost) - 1, NULL);
    expect_dropped(sizeof(struct pmsg_lost) - 1, "malformed LOST");
}

/* PROGRESS (version 12): fixed length, whatever n says. */
Test(messages, progress_is_fixed_length)
{
    const char *why;
    struct pmsg_progress p;
    pmsg_init(&p.h, PMSG_PROGRESS, sizeof p);
    cr_assert(eq(int, pmsg_check(&p, sizeof p, &why), PMSG_PROGRESS));
    cr_expect(eq(sz, sizeof p, sizeof(struct pmsg_header) + 4 + PMSG_PROGRESS_MAX * (4 + 3 * 8)));
    pmsg_init(&p.h, PMSG_PROGRESS, sizeof p - 1);
    cr_expect(eq(int, pmsg_check(&p, sizeof p - 1, &why), -1), "a short progress");
}
