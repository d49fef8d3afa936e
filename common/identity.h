/* identity.h - how a client's identity is written and matched: the rule
 * shared by the NBD grants (volume/access.h) and the network API's admins
 * (api/api.h), so both read a name the same way.
 *
 * A pattern is a bare NAME, matching a certificate whose subject has a CN
 * of NAME and any other identity (a PSK user, a token's) equal to NAME; or
 * "dn:" and an RFC 4514 DN, matching that one certificate subject (its
 * attribute types in any case, its values as written, escapes included).
 * Pure functions, any thread.
 */
#ifndef VSAN_COMMON_IDENTITY_H
#define VSAN_COMMON_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

/* Longest NAME or DN (a certificate subject as GnuTLS writes it). */
#define IDENTITY_BODY_MAX 512
#define IDENTITY_DN_PREFIX "dn:"
/* Longest pattern: a DN with its prefix. */
#define IDENTITY_MAX (IDENTITY_BODY_MAX + sizeof IDENTITY_DN_PREFIX - 1)

/* Whether s is a pattern: 0; -EINVAL with why set (empty, a control
 * character, a space at its start or end, ':' or '=' in a bare NAME,
 * "dn:" without a DN); -ENAMETOOLONG
 * (a NAME or DN above IDENTITY_BODY_MAX bytes). */
int identity_check(const char *s, const char **why);

/* Whether the pattern (checked) matches identity: a certificate's subject
 * DN when certificate is set, else a name. */
bool identity_matches(const char *pattern, const char *identity, bool certificate);

/* Whether a and b, both written as patterns are ("dn:DN" for a
 * certificate, a bare NAME for anything else), are one identity: of one
 * kind, and equal (DNs but for the case of attribute types). No CN rule:
 * what an owner is matched by. */
bool identity_same(const char *a, const char *b);

/* s (checked) as GnuTLS writes a certificate subject: a "dn:" DN without
 * the spaces around its separators and with its attribute types in upper
 * case (values as written); a bare NAME as it is. out: size bytes (at
 * least strlen(s) + 1). */
void identity_canonical(const char *s, char *out, size_t size);

#endif
