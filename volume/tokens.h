/* tokens.h - the API's bearer tokens: part of the replicated volume
 * table (policing/protocol.h), which holds only their hashes.
 *
 * A token reads "vsan_" ID "_" SECRET: ID is 16 hex digits, public (what
 * `vsan token list` and `revoke` name); SECRET is 64 hex digits, 32 bytes
 * from gnutls_rnd(GNUTLS_RND_KEY), shown once by `vsan token create` and
 * kept nowhere: the table keeps its SHA-256, with the ID, the identity
 * the token stands for (a grant's identity, access.h) and when it was
 * made.
 *
 * Persistence: DATA_DIR/tokens, one line per token "ID CREATED HASH
 * IDENTITY", replaced whole and atomically on each change.
 *
 * Threads: changes from the main loop (the agreed stream); lookups
 * (tokens_identity) from any thread; a rwlock guards the table.
 */
#ifndef VSAN_VOLUME_TOKENS_H
#define VSAN_VOLUME_TOKENS_H

#include "policing/protocol.h"

#include <stdbool.h>
#include <stddef.h>

#define TOKENS_MAX 4096
#define TOKEN_PREFIX "vsan_"
#define TOKEN_SECRET_LEN 32
/* The token as text, without its NUL. */
#define TOKEN_TEXT_LEN (sizeof TOKEN_PREFIX - 1 + PMSG_TOKEN_ID_LEN + 1 + 2 * TOKEN_SECRET_LEN)

struct policing;
struct store;
struct tokens;

/* Reads DATA_DIR/tokens (none: no tokens). -EINVAL for a malformed file
 * (logged with its line), -errno. */
int tokens_open(struct store *st, struct tokens **out);
void tokens_close(struct tokens *t);

/* A new token for identity, made here: *rec is what the table keeps (id,
 * identity, hash, created now), text (TOKEN_TEXT_LEN + 1 bytes) the
 * token to show once. -EIO if the random generator failed. */
int tokens_make(const char *identity, struct policing_token *rec, char text[TOKEN_TEXT_LEN + 1]);

/* rec made, or (revoke) the token rec->id revoked, persisted. 0, -EEXIST
 * (the id is taken), -ESRCH (no token rec->id), -EINVAL (a bad identity
 * or id), -EDQUOT (TOKENS_MAX already), -errno (a new token the file did
 * not take). A revoke is in force even if the file can't be written
 * (logged; rewritten at the next change or sync round). */
int tokens_apply(struct tokens *t, const struct policing_token *rec, bool revoke);
/* The tokens, malloc'd, in the order made. */
int tokens_list(struct tokens *t, struct policing_token **out, size_t *n);
/* The group's tokens replace this node's, persisted; in force even if
 * the file can't be written (as a revoke). */
int tokens_load(struct tokens *t, const struct policing_token *rec, size_t n);

/* The cluster whose table the tokens are: once set, tokens_identity
 * answers only while this node's table is the group's (policing_readable). */
void tokens_set_policing(struct tokens *t, struct policing *pc);

/* Who bearer (a token as text) stands for: 0 with its identity in
 * identity (size bytes), or -ENOENT (malformed, unknown, or revoked),
 * -ENAMETOOLONG (identity too small), -EAGAIN (this node is not readable:
 * without quorum, or not synced since, it may have missed a revoke). The
 * secret's hash is compared in constant time. Any thread. */
int tokens_identity(struct tokens *t, const char *bearer, char *identity, size_t size);

#endif
