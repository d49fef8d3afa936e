/* test_mirror_stream.c - the mirror link's buffered message streams
 * (mirror/stream.c) over real sockets: messages split at every byte
 * boundary, payloads handed out in place or allocated when larger than the
 * buffer, batches read in one go, and every way a stream ends or breaks;
 * and the handshake's unbuffered reads: nothing read past the message, a
 * message longer than allowed refused on its header, one deadline for all
 * the reads of a message that trickles in. */
#include "mirror/stream.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int sv[2];

static void pair(void)
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void unpair(void)
{
    close(sv[0]);
    close(sv[1]);
}

/* A sealed WRITE of len bytes filled from seed, as one byte string. */
static size_t message(char *out, uint64_t id, uint32_t len, int seed)
{
    struct mwire_header h;
    mwire_init(&h, MW_WRITE, id);
    h.length = len;
    h.payload = len;
    char *payload = out + sizeof h;
    for (uint32_t i = 0; i < len; i++)
        payload[i] = (char)(seed * 31 + i);
    mwire_seal(&h, payload);
    memcpy(out, &h, sizeof h);
    return sizeof h + len;
}

static void expect_message(struct mstream *s, uint64_t id, uint32_t len, int seed)
{
    struct mwire_header h;
    const void *payload;
    const char *why = "";
    cr_assert_eq(mstream_recv(s, &h, &payload, &why, NULL, NULL), 0, "message %llu: %s",
                 (unsigned long long)id, why);
    cr_assert_eq(h.id, id);
    cr_assert_eq(h.payload, len);
    const char *p = payload;
    for (uint32_t i = 0; i < len; i++)
        cr_assert_eq(p[i], (char)(seed * 31 + i), "message %llu: byte %u", (unsigned long long)id,
                     i);
}

struct trickle {
    const char *buf;
    size_t len, chunk;
};

/* Writes the bytes in chunks of the given size, then closes its end. */
static void *trickle_main(void *arg)
{
    struct trickle *t = arg;
    for (size_t off = 0; off < t->len;) {
        size_t n = t->len - off < t->chunk ? t->len - off : t->chunk;
        ssize_t w = write(sv[1], t->buf + off, n);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR);
    return NULL;
}

Test(stream, messages_split_anywhere_arrive_whole, .init = pair, .fini = unpair)
{
    enum { N = 40 };
    static char bytes[N * (sizeof(struct mwire_header) + 3000)];
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += message(bytes + len, (uint64_t)i + 1, (uint32_t)(i * 73 % 3000 + 1), i);
    size_t chunks[] = {1, 7, 56, 57, 4096};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        unpair();
        pair();
        struct trickle t = {bytes, len, chunks[c]};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, trickle_main, &t), 0);
        struct mstream s;
        cr_assert_eq(mstream_init(&s, sv[0], 8192), 0);
        for (int i = 0; i < N; i++)
            expect_message(&s, (uint64_t)i + 1, (uint32_t)(i * 73 % 3000 + 1), i);
        struct mwire_header h;
        const void *payload;
        const char *why;
        cr_assert_eq(mstream_recv(&s, &h, &payload, &why, NULL, NULL), -ECONNRESET,
                     "chunk %zu: the end of the stream", chunks[c]);
        mstream_free(&s);
        pthread_join(th, NULL);
    }
}

Test(stream, a_batch_is_read_at_once_and_payloads_stay_in_place, .init = pair, .fini = unpair)
{
    static char bytes[4 * (sizeof(struct mwire_header) + 512)];
    size_t len = 0;
    for (int i = 0; i < 4; i++)
        len += message(bytes + len, (uint64_t)i + 1, 512, i);
    cr_assert_eq(write(sv[1], bytes, len), (ssize_t)len);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 64 * 1024), 0);
    for (int i = 0; i < 4; i++) {
        struct mwire_header h;
        const void *payload;
        const char *why;
        cr_assert_eq(mstream_recv(&s, &h, &payload, &why, NULL, NULL), 0);
        cr_assert((const char *)payload >= s.buf && (const char *)payload < s.buf + s.cap,
                  "a payload that arrived whole is not copied");
        cr_assert_eq(mstream_has_header(&s), i < 3, "after message %d", i);
    }
    mstream_free(&s);
}

/* Looking ahead (mlink_ahead's copy-on-write, mirror/serve.c) names the
 * buffered messages behind the one taken, in order, payloads in or not,
 * up to the first whose header is not all in, or does not check; and
 * takes nothing. */
Test(stream, peek_names_the_buffered_messages_and_takes_none, .init = pair, .fini = unpair)
{
    enum { M = sizeof(struct mwire_header) + 512 };
    static char bytes[5 * M];
    size_t len = 0;
    for (int i = 0; i < 5; i++)
        len += message(bytes + len, (uint64_t)i + 1, 512, i);
    bytes[3 * M + 8] ^= 1; /* the fourth header's id: its CRC fails */
    len = 3 * M - 1;       /* the third: its header in, its payload not */
    cr_assert_eq(write(sv[1], bytes, len), (ssize_t)len);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 64 * 1024), 0);
    expect_message(&s, 1, 512, 0);
    struct mwire_header h;
    size_t pos = 0;
    for (uint64_t id = 2; id <= 3; id++) {
        cr_assert(mstream_peek(&s, &pos, &h), "message %llu is buffered", (unsigned long long)id);
        cr_assert_eq(h.id, id);
    }
    cr_assert_not(mstream_peek(&s, &pos, &h), "nothing more is buffered");
    expect_message(&s, 2, 512, 1);
    pos = 0;
    cr_assert(mstream_peek(&s, &pos, &h));
    cr_assert_eq(h.id, 3, "nothing was taken by the look");
    /* The rest of the third, and the fourth, whose header does not check. */
    cr_assert_eq(write(sv[1], bytes + len, 5 * M - len), (ssize_t)(5 * M - len));
    expect_message(&s, 3, 512, 2);
    pos = 0;
    cr_assert_not(mstream_peek(&s, &pos, &h), "a header that does not check ends the look");
    mstream_free(&s);
}

Test(stream, a_payload_larger_than_the_buffer_is_allocated, .init = pair, .fini = unpair)
{
    enum { LEN = 300000 };
    static char bytes[sizeof(struct mwire_header) + LEN];
    size_t len = message(bytes, 9, LEN, 5);
    struct trickle t = {bytes, len, 65536};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, trickle_main, &t), 0);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 4096), 0);
    expect_message(&s, 9, LEN, 5);
    cr_assert_not_null(s.owned);
    mstream_free(&s);
    pthread_join(th, NULL);
}

static void expect_error(const char *bytes, size_t len, int err, const char *why_part)
{
    cr_assert_eq(write(sv[1], bytes, len), (ssize_t)len);
    shutdown(sv[1], SHUT_WR);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 4096), 0);
    struct mwire_header h;
    const void *payload;
    const char *why = "";
    cr_assert_eq(mstream_recv(&s, &h, &payload, &why, NULL, NULL), err, "%s", why);
    cr_assert_null(payload);
    cr_assert_not_null(strstr(why, why_part), "why: %s", why);
    mstream_free(&s);
}

Test(stream, the_end_inside_a_header_or_payload_is_a_reset, .init = pair, .fini = unpair)
{
    char bytes[sizeof(struct mwire_header) + 100];
    size_t len = message(bytes, 1, 100, 1);
    expect_error(bytes, len - 1, -ECONNRESET, strerror(ECONNRESET));
    unpair();
    pair();
    expect_error(bytes, 10, -ECONNRESET, strerror(ECONNRESET));
}

Test(stream, a_corrupted_payload_or_header_is_refused, .init = pair, .fini = unpair)
{
    char bytes[sizeof(struct mwire_header) + 100];
    size_t len = message(bytes, 1, 100, 1);
    bytes[len - 1] ^= 1;
    expect_error(bytes, len, -EBADMSG, "crc");
    unpair();
    pair();
    message(bytes, 1, 100, 1);
    bytes[0] ^= 1;
    expect_error(bytes, len, -EPROTO, "magic");
}

static int asked;

static bool give_up(void *arg)
{
    (void)arg;
    asked++;
    return false;
}

Test(stream, a_silent_peer_times_out_when_told_to_stop_waiting, .init = pair, .fini = unpair)
{
    struct timeval tv = {.tv_usec = 20000};
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 4096), 0);
    struct mwire_header h;
    const void *payload;
    const char *why;
    cr_assert_eq(mstream_recv(&s, &h, &payload, &why, give_up, NULL), -ETIMEDOUT);
    cr_assert_eq(asked, 1);
    mstream_free(&s);
}

Test(stream, send_seals_what_recv_accepts, .init = pair, .fini = unpair)
{
    struct mwire_header h;
    mwire_init(&h, MW_WRITE, 77);
    char payload[1000];
    memset(payload, 'v', sizeof payload);
    h.length = h.payload = sizeof payload;
    cr_assert_eq(mstream_send(sv[1], &h, payload), 0);
    struct mstream s;
    cr_assert_eq(mstream_init(&s, sv[0], 4096), 0);
    struct mwire_header got;
    const void *p;
    const char *why = "";
    cr_assert_eq(mstream_recv(&s, &got, &p, &why, NULL, NULL), 0, "%s", why);
    cr_assert_eq(got.id, 77);
    cr_assert_eq(memcmp(p, payload, sizeof payload), 0);
    mstream_free(&s);
}

/* A deadline ms from now. */
static struct timespec in_ms(long ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += ms % 1000 * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

Test(stream, a_handshake_message_larger_than_allowed_is_refused_unread, .init = pair,
     .fini = unpair)
{
    static char bytes[sizeof(struct mwire_header) + 1000];
    size_t len = message(bytes, 3, 1000, 3);
    cr_assert_eq(write(sv[1], bytes, len), (ssize_t)len);
    struct timespec deadline = in_ms(1000);
    struct mwire_header h;
    char small[128];
    const char *why = "";
    cr_assert_eq(mstream_recv_small(sv[0], &deadline, &h, small, sizeof small, &why), -EPROTO);
    cr_assert_not_null(strstr(why, "WRITE of 1000 bytes"), "why: %s", why);
    char rest[2000];
    cr_assert_eq(recv(sv[0], rest, sizeof rest, MSG_DONTWAIT), 1000,
                 "the payload is left unread, not buffered");
}

Test(stream, a_small_message_is_read_exactly, .init = pair, .fini = unpair)
{
    char bytes[2 * (sizeof(struct mwire_header) + 100)];
    size_t len = message(bytes, 1, 100, 1);
    len += message(bytes + len, 2, 100, 2);
    cr_assert_eq(write(sv[1], bytes, len), (ssize_t)len);
    struct timespec deadline = in_ms(1000);
    struct mwire_header h;
    char small[100];
    const char *why = "";
    cr_assert_eq(mstream_recv_small(sv[0], &deadline, &h, small, sizeof small, &why), 0, "%s", why);
    cr_assert_eq(h.id, 1);
    cr_assert_eq(memcmp(small, bytes + sizeof h, 100), 0);
    cr_assert_eq(mstream_recv_small(sv[0], &deadline, &h, small, sizeof small, &why), 0, "%s", why);
    cr_assert_eq(h.id, 2, "nothing of the next message was read ahead");
}

/* Writes one byte every 50 ms until the other end is closed. */
static void *drip_main(void *arg)
{
    const char *bytes = arg;
    for (size_t i = 0; i < sizeof(struct mwire_header); i++) {
        if (send(sv[1], bytes + i, 1, MSG_NOSIGNAL) != 1)
            break;
        poll(NULL, 0, 50);
    }
    return NULL;
}

Test(stream, one_deadline_covers_every_read, .init = pair, .fini = unpair)
{
    static char bytes[sizeof(struct mwire_header)];
    message(bytes, 1, 0, 1);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drip_main, bytes), 0);
    struct timespec start = in_ms(0), deadline = in_ms(300);
    struct mwire_header h;
    const char *why = "";
    cr_assert_eq(mstream_recv_small(sv[0], &deadline, &h, NULL, 0, &why), -ETIMEDOUT,
                 "a byte every 50 ms, 56 bytes, within 300 ms: %s", why);
    struct timespec end = in_ms(0);
    long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    cr_assert(ms >= 290 && ms < 1000, "gave up after %ld ms", ms);
    shutdown(sv[0], SHUT_RDWR);
    pthread_join(th, NULL);
}
