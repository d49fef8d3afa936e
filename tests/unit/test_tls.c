/* test_tls.c - nbd-server/tls.c's sessions against a GnuTLS client on a
 * socketpair: what conn_io.c relies on when its reader receives while
 * another thread sends. */
#include "nbd-server/tls.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REC 16384
#define RECORDS 64 /* more than the socket takes */

static char dir[64];
static char psk_path[128];
static int sv[2] = {-1, -1};
static struct nbd_tls_creds *creds;
static struct nbd_tls_session *server;
static gnutls_session_t client;
static gnutls_psk_client_credentials_t client_creds;

static void *client_handshake(void *arg)
{
    (void)arg;
    int r;
    do
        r = gnutls_handshake(client);
    while (r < 0 && !gnutls_error_is_fatal(r));
    return (void *)(intptr_t)r;
}

/* A TLS 1.3 session with PSK: the server through nbd_tls_accept on a
 * non-blocking socket with small buffers (a reply fills it at once), the
 * client a plain blocking GnuTLS session. */
static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/vsan-test-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(psk_path, sizeof psk_path, "%s/keys.psk", dir);
    FILE *f = fopen(psk_path, "w");
    cr_assert_not_null(f);
    fprintf(f, "alice:000102030405060708090a0b0c0d0e0f\n");
    cr_assert_eq(fclose(f), 0);
    char err[256];
    struct nbd_tls_config cfg = {.certificates = "", .psk_file = psk_path};
    creds = nbd_tls_creds_load(&cfg, err, sizeof err);
    cr_assert_not_null(creds, "%s", err);

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);

    static unsigned char key[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    gnutls_datum_t k = {key, sizeof key};
    cr_assert_eq(gnutls_psk_allocate_client_credentials(&client_creds), 0);
    cr_assert_eq(gnutls_psk_set_client_credentials(client_creds, "alice", &k, GNUTLS_PSK_KEY_RAW),
                 0);
    cr_assert_eq(gnutls_init(&client, GNUTLS_CLIENT), 0);
    cr_assert_eq(
        gnutls_priority_set_direct(client, "NORMAL:+ECDHE-PSK:+PSK:-VERS-ALL:+VERS-TLS1.3", NULL),
        0);
    cr_assert_eq(gnutls_credentials_set(client, GNUTLS_CRD_PSK, client_creds), 0);
    gnutls_transport_set_int(client, sv[1]);

    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, client_handshake, NULL), 0);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 10;
    server = nbd_tls_accept(creds, sv[0], "test", &deadline);
    void *r;
    pthread_join(t, &r);
    cr_assert_not_null(server);
    cr_assert_eq((intptr_t)r, 0, "client handshake: %s", gnutls_strerror((int)(intptr_t)r));
    cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
}

static void teardown(void)
{
    nbd_tls_session_free(server);
    nbd_tls_creds_unref(creds);
    gnutls_deinit(client);
    gnutls_psk_free_client_credentials(client_creds);
    for (int i = 0; i < 2; i++)
        if (sv[i] >= 0)
            close(sv[i]);
    unlink(psk_path);
    rmdir(dir);
}

/* The client reads what comes until the session ends: *good counts the
 * bytes that are record i's where record i belongs (all bytes i), *bad
 * the others. */
struct stream {
    size_t good, bad;
};

static void *client_read(void *arg)
{
    struct stream *st = arg;
    static unsigned char buf[REC];
    size_t total = 0;
    for (;;) {
        ssize_t n = gnutls_record_recv(client, buf, sizeof buf);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0)
            return NULL;
        for (ssize_t i = 0; i < n; i++, total++) {
            if (buf[i] == (unsigned char)(total / REC))
                st->good++;
            else
                st->bad++;
        }
    }
}

/* Fills the socket: sends records 0, 1, ... until one is cut short;
 * returns that one's number. */
static int send_until_cut(unsigned char *buf)
{
    struct iovec iov = {buf, REC};
    for (int i = 0; i < RECORDS; i++) {
        memset(buf, i, REC);
        ssize_t n = nbd_tls_send(server, &iov, 1, "test");
        if (n < 0) {
            cr_assert_eq(errno, EAGAIN, "send: %s", strerror(errno));
            return i;
        }
        cr_assert_eq(n, REC);
    }
    cr_assert_fail("no send was cut short");
    return -1;
}

/* GnuTLS clients update their own key after 2^24 records (a KeyUpdate
 * asking nothing back): taken, even while a send is cut short, and every
 * record arrives once. */
Test(tls, a_key_update_asking_nothing_is_taken, .init = setup, .fini = teardown, .timeout = 20)
{
    cr_assert_eq(gnutls_session_key_update(client, 0), 0);
    static unsigned char buf[REC];
    int i = send_until_cut(buf);
    unsigned char in[64];
    cr_assert_eq(nbd_tls_recv(server, in, sizeof in, "test"), -1);
    cr_assert_eq(errno, EAGAIN, "the key update was refused: %s", strerror(errno));

    struct stream st = {0};
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, client_read, &st), 0);
    struct iovec iov = {buf, REC};
    for (ssize_t n; i < RECORDS; i++) {
        memset(buf, i, REC);
        do
            n = nbd_tls_send(server, &iov, 1, "test");
        while (n < 0 && (errno == EAGAIN || errno == EINTR));
        cr_assert_eq(n, REC, "send of record %d: %s", i, strerror(errno));
    }
    shutdown(sv[0], SHUT_RDWR);
    pthread_join(reader, NULL);
    cr_assert_eq(st.bad, 0, "the client read %zu bytes out of place", st.bad);
    cr_assert_eq(st.good, (size_t)RECORDS * REC);
}

/* A client asks for a key update (TLS 1.3, update_requested) while the
 * server's send of a reply is cut short by a full socket. Taken by the
 * reader's receive, GnuTLS would answer it inside the send being retried
 * and put that record in the stream twice: the receive refuses it, the
 * session ends, and what the client got of the stream is exact. */
Test(tls, a_key_update_is_refused_and_never_duplicates_a_record, .init = setup, .fini = teardown,
     .timeout = 20)
{
    cr_assert_eq(gnutls_session_key_update(client, GNUTLS_KU_PEER), 0);
    static unsigned char buf[REC];
    struct iovec iov = {buf, REC};
    int i = send_until_cut(buf);
    ssize_t n;

    unsigned char in[64];
    cr_assert_eq(nbd_tls_recv(server, in, sizeof in, "test"), -1);
    cr_assert_eq(errno, EIO, "the key update was not refused: %s", strerror(errno));

    struct stream st = {0};
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, client_read, &st), 0);
    do
        n = nbd_tls_send(server, &iov, 1, "test");
    while (n < 0 && (errno == EAGAIN || errno == EINTR));
    shutdown(sv[0], SHUT_RDWR); /* the session ends: the client reads to its end */
    pthread_join(reader, NULL);
    cr_assert_eq(st.bad, 0, "the client read %zu bytes out of place after %zu right", st.bad,
                 st.good);
    cr_assert_geq(st.good, (size_t)i * REC, "the client got %zu of the %d records sent whole",
                  st.good / REC, i);
}
