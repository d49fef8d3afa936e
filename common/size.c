/* size.c - parsing and formatting of byte counts; see size.h for the rules.
 *
 * The parser is strict on purpose: a config line such as "size = 10.5G" or
 * "size = 10GG" is an error the admin sees, not a volume of some other size.
 */
#include "common/size.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char unit_letters[] = "KMGTPE";

/* Returns the power of 1024 the unit at s stands for, or -1 if s is not
 * exactly one unit spelling (with nothing after it). */
static int parse_unit(const char *s)
{
    if (*s == '\0')
        return 0;
    if ((s[0] == 'B' || s[0] == 'b') && s[1] == '\0')
        return 0;
    const char *letter = strchr(unit_letters, toupper((unsigned char)s[0]));
    if (letter == NULL)
        return -1;
    int shift = (int)(letter - unit_letters) + 1;
    const char *rest = s + 1;
    if (*rest == 'i' || *rest == 'I')
        rest++;
    if (*rest == 'B' || *rest == 'b')
        rest++;
    else if (rest != s + 1)
        return -1; /* "Ki" without its B */
    return *rest == '\0' ? shift : -1;
}

int size_parse(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -EINVAL;
    uint64_t value = 0;
    bool overflow = false;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (value > (UINT64_MAX - digit) / 10)
            overflow = true;
        else
            value = value * 10 + digit;
    }
    const char *unit = s;
    while (*unit == ' ')
        unit++;
    if (unit != s && *unit == '\0')
        return -EINVAL; /* trailing spaces */
    int shift = parse_unit(unit);
    if (shift < 0)
        return -EINVAL;
    if (overflow)
        return -ERANGE;
    for (int i = 0; i < shift; i++) {
        if (value > UINT64_MAX / 1024)
            return -ERANGE;
        value *= 1024;
    }
    *out = value;
    return 0;
}

void size_format(uint64_t bytes, char *buf, size_t len)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (len == 0)
        return;
    if (bytes < 10 * 1024) {
        snprintf(buf, len, "%" PRIu64 " B", bytes);
        return;
    }
    unsigned shift = 1;
    while (shift < 6 && bytes >> (10 * (shift + 1)) != 0)
        shift++;
    uint64_t unit = UINT64_C(1) << (10 * shift);
    uint64_t whole = bytes / unit;
    uint64_t rest = bytes % unit;
    if (rest == 0)
        snprintf(buf, len, "%" PRIu64 " %s", whole, names[shift]);
    else
        snprintf(buf, len, "%" PRIu64 ".%" PRIu64 " %s", whole, rest * 10 / unit, names[shift]);
}
