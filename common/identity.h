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

/* Longest NAME or DN (a certificate subject as GnuTLS writes it). */
#define IDENTITY_BODY_MAX 512
#define IDENTITY_DN_PREFIX "dn:"
/* Longest pattern: a DN with its prefix. */
#define IDENTITY_MAX (IDENTITY_BODY_MAX + sizeof IDENTITY_DN_PREFIX - 1)

/* Whether s is a pattern: 0; -EINVAL with why set (empty, a control
 * character, ':' or '=' in a bare NAME, "dn:" without a DN); -ENAMETOOLONG
 * (a NAME or DN above IDENTITY_BODY_MAX bytes). */
int identity_check(const char *s, const char **why);

/* Whether the pattern (checked) matches identity: a certificate's subject
 * DN when certificate is set, else a name. */
bool identity_matches(const char *pattern, const char *identity, bool certificate);

#endif
