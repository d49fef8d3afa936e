/* identity.c - identity patterns: their syntax and matching (see
 * identity.h). */
#include "common/identity.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One attribute of an RFC 4514 DN at *p: its type (up to the '=') and its
 * value unescaped into val (at most size - 1 bytes kept); *p moves past
 * the ',' or '+' after it. false if there is no '=' or the type is empty. */
static bool next_attribute(const char **p, const char **type, size_t *tlen, char *val, size_t size)
{
    const char *eq = strchr(*p, '=');
    if (!eq || eq == *p)
        return false;
    *type = *p;
    *tlen = (size_t)(eq - *p);
    size_t n = 0;
    const char *q = eq + 1;
    while (*q && *q != ',' && *q != '+') {
        char c = *q++;
        if (c == '\\' && *q) {
            int hi = hexval(q[0]), lo = hi >= 0 && q[1] ? hexval(q[1]) : -1;
            if (lo >= 0) {
                c = (char)(hi << 4 | lo);
                q += 2;
            } else {
                c = *q++;
            }
        }
        if (n + 1 < size)
            val[n++] = c;
    }
    val[n] = '\0';
    *p = *q ? q + 1 : q;
    return true;
}

/* Whether the subject DN has a CN (by name or OID) whose value is name. */
static bool dn_has_cn(const char *dn, const char *name)
{
    char val[IDENTITY_MAX + 1];
    const char *p = dn, *type;
    size_t tlen;
    while (*p && next_attribute(&p, &type, &tlen, val, sizeof val)) {
        bool cn = (tlen == 2 && strncasecmp(type, "CN", 2) == 0) ||
                  (tlen == 7 && strncmp(type, "2.5.4.3", 7) == 0);
        if (cn && strcmp(val, name) == 0)
            return true;
    }
    return false;
}

static bool dn_ok(const char *dn)
{
    char val[IDENTITY_MAX + 1];
    const char *p = dn, *type;
    size_t tlen;
    while (*p) {
        if (!next_attribute(&p, &type, &tlen, val, sizeof val))
            return false;
        for (size_t i = 0; i < tlen; i++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-",
                        type[i]))
                return false;
    }
    return *dn != '\0';
}

/* Whether s starts or ends with a space (not escaped): a file or the
 * sync stream would not keep it apart from the name without. */
static bool loose_space(const char *s)
{
    size_t n = strlen(s);
    return s[0] == ' ' || (n && s[n - 1] == ' ' && (n < 2 || s[n - 2] != '\\'));
}

int identity_check(const char *s, const char **why)
{
    bool dn = strncmp(s, IDENTITY_DN_PREFIX, strlen(IDENTITY_DN_PREFIX)) == 0;
    const char *body = dn ? s + strlen(IDENTITY_DN_PREFIX) : s;
    if (strlen(body) > IDENTITY_BODY_MAX) {
        *why = "longer than 512 bytes";
        return -ENAMETOOLONG;
    }
    if (!body[0])
        *why = dn ? "dn: needs a DN (RFC 4514, such as CN=alice,O=Example)" : "empty";
    else if (has_control(body))
        *why = "a control character";
    else if (loose_space(body))
        *why = "a space at its start or end";
    else if (dn && !dn_ok(body))
        *why = "not an RFC 4514 DN (TYPE=VALUE,...)";
    else if (!dn && strpbrk(body, ":="))
        *why = "':' or '=' in a bare name (a certificate's subject is written dn:CN=...,O=...)";
    else
        return 0;
    return -EINVAL;
}

/* Whether two DNs are the same as written, but for the case of their
 * attribute types: GnuTLS writes "CN=", an admin may write "cn=", and
 * types are case-insensitive (RFC 4514); values are compared exactly,
 * escapes included. */
static bool dn_equal(const char *a, const char *b)
{
    bool in_type = true;
    for (; *a && *b; a++, b++) {
        if (in_type ? tolower((unsigned char)*a) != tolower((unsigned char)*b) : *a != *b)
            return false;
        if (in_type && *a == '=') {
            in_type = false;
        } else if (!in_type && *a == '\\') {
            a++, b++; /* the escaped character, a value's */
            if (!*a || *a != *b)
                return false;
        } else if (!in_type && (*a == ',' || *a == '+')) {
            in_type = true;
        }
    }
    return *a == *b;
}

bool identity_same(const char *a, const char *b)
{
    size_t pl = strlen(IDENTITY_DN_PREFIX);
    bool da = strncmp(a, IDENTITY_DN_PREFIX, pl) == 0, db = strncmp(b, IDENTITY_DN_PREFIX, pl) == 0;
    if (da != db)
        return false;
    return da ? dn_equal(a + pl, b + pl) : strcmp(a, b) == 0;
}

void identity_canonical(const char *s, char *out, size_t size)
{
    size_t pl = strlen(IDENTITY_DN_PREFIX), n = 0, keep = 0;
    if (strncmp(s, IDENTITY_DN_PREFIX, pl) != 0 || size < pl + 1) {
        snprintf(out, size, "%s", s);
        return;
    }
    memcpy(out, s, pl);
    n = keep = pl; /* keep: the output up to the last character that is not a loose space */
    bool in_type = true, start = true;
    for (const char *p = s + pl; *p && n + 2 < size; p++) {
        char c = *p;
        if (c == ' ' && (in_type || start))
            continue; /* around a separator or an '=' */
        if (in_type && c == '=') {
            n = keep;
            out[n++] = c;
            in_type = false;
            start = true;
        } else if (in_type) {
            out[n++] = (char)toupper((unsigned char)c);
        } else if (c == '\\' && p[1]) {
            out[n++] = c;
            out[n++] = *++p;
            start = false;
        } else if (c == ',' || c == '+') {
            n = keep; /* a value's trailing spaces, unescaped */
            out[n++] = c;
            in_type = start = true;
        } else {
            out[n++] = c;
            start = false;
            if (c == ' ')
                continue;
        }
        keep = n;
    }
    out[keep] = '\0';
}

bool identity_matches(const char *pattern, const char *identity, bool certificate)
{
    size_t pl = strlen(IDENTITY_DN_PREFIX);
    if (strncmp(pattern, IDENTITY_DN_PREFIX, pl) == 0)
        return certificate && dn_equal(pattern + pl, identity);
    if (certificate)
        return dn_has_cn(identity, pattern);
    return strcmp(pattern, identity) == 0;
}
