/* size.h - sizes as people write them ("10G", "512MiB") and as we show them.
 *
 * Shared by the config parser, the CLI and the daemon so that one spelling
 * means the same everywhere. Every multiple is binary (K = 1024): a volume
 * of "10G" is exactly 10 GiB, which is what block devices and qemu expect.
 */
#ifndef VSAN_SIZE_H
#define VSAN_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Longest string size_format() writes, with its NUL: "1023.9 PiB". */
#define SIZE_FORMAT_MAX 16

/* Parses decimal digits, optionally followed (after optional spaces) by a
 * unit: B, or K M G T P E in either case, alone or with "B" or "iB"
 * ("512K", "512KB", "512KiB", "10 GiB"). Returns 0 and sets *out,
 * -EINVAL for anything else (empty, sign, fraction, spaces around, junk),
 * -ERANGE if the value does not fit in 64 bits. */
int size_parse(const char *s, uint64_t *out);

/* Writes bytes for people: in bytes below 10 KiB ("4096 B"), else in the
 * largest binary unit that keeps the number >= 1, without decimals when
 * exact ("10 GiB") and with one truncated decimal otherwise ("1.5 GiB"), so
 * a shown size never exceeds the real one. Truncates to fit len. */
void size_format(uint64_t bytes, char *buf, size_t len);

#endif
