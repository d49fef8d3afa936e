/* test_size.c - size_parse() and size_format(): every spelling the config
 * and CLI accept, everything they must refuse, and the human output. */
#include "common/size.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>

static uint64_t parsed(const char *s)
{
    uint64_t v = 0;
    int r = size_parse(s, &v);
    cr_assert_eq(r, 0, "size_parse(\"%s\") = %d, expected success", s, r);
    return v;
}

static void refused(const char *s, int err)
{
    uint64_t v = 12345;
    int r = size_parse(s, &v);
    cr_assert_eq(r, err, "size_parse(\"%s\") = %d, expected %d", s, r, err);
    cr_assert_eq(v, 12345, "size_parse(\"%s\") wrote its output on failure", s);
}

Test(size_parse, plain_bytes)
{
    cr_assert_eq(parsed("0"), 0);
    cr_assert_eq(parsed("4096"), 4096);
    cr_assert_eq(parsed("4096B"), 4096);
    cr_assert_eq(parsed("18446744073709551615"), UINT64_MAX);
}

Test(size_parse, binary_units)
{
    cr_assert_eq(parsed("512K"), 512 * 1024);
    cr_assert_eq(parsed("512M"), 512ull << 20);
    cr_assert_eq(parsed("10G"), 10ull << 30);
    cr_assert_eq(parsed("1T"), 1ull << 40);
    cr_assert_eq(parsed("2P"), 2ull << 50);
    cr_assert_eq(parsed("15E"), 15ull << 60);
}

Test(size_parse, unit_spellings)
{
    cr_assert_eq(parsed("10GiB"), 10ull << 30);
    cr_assert_eq(parsed("10GB"), 10ull << 30);
    cr_assert_eq(parsed("10g"), 10ull << 30);
    cr_assert_eq(parsed("10gib"), 10ull << 30);
    cr_assert_eq(parsed("10 GiB"), 10ull << 30);
    cr_assert_eq(parsed("1KiB"), 1024);
}

Test(size_parse, refuses_malformed)
{
    refused("", -EINVAL);
    refused(" 10G", -EINVAL);
    refused("10G ", -EINVAL);
    refused("10 ", -EINVAL);
    refused("-1", -EINVAL);
    refused("+1", -EINVAL);
    refused("1.5G", -EINVAL);
    refused("G", -EINVAL);
    refused("10X", -EINVAL);
    refused("10GG", -EINVAL);
    refused("10Gi", -EINVAL);
    refused("10GiBs", -EINVAL);
    refused("10iB", -EINVAL);
    refused("0x10", -EINVAL);
    refused("10G\n", -EINVAL);
    cr_assert_eq(size_parse(NULL, &(uint64_t){0}), -EINVAL);
}

Test(size_parse, refuses_overflow)
{
    refused("18446744073709551616", -ERANGE);
    refused("99999999999999999999999", -ERANGE);
    refused("16E", -ERANGE);
    refused("16384P", -ERANGE);
    /* Junk beats overflow: the input is wrong, not merely too big. */
    refused("99999999999999999999999X", -EINVAL);
}

static void formats(uint64_t bytes, const char *want)
{
    char buf[SIZE_FORMAT_MAX];
    size_format(bytes, buf, sizeof(buf));
    cr_assert_str_eq(buf, want, "size_format(%llu) = \"%s\", expected \"%s\"",
                     (unsigned long long)bytes, buf, want);
}

Test(size_format, exact_units)
{
    formats(10ull << 30, "10 GiB");
    formats(512ull << 20, "512 MiB");
    formats(512 * 1024, "512 KiB");
    formats(1ull << 40, "1 TiB");
    formats(2ull << 50, "2 PiB");
    formats(15ull << 60, "15 EiB");
}

Test(size_format, small_values_in_bytes)
{
    formats(0, "0 B");
    formats(512, "512 B");
    formats(4096, "4096 B");
    formats(10 * 1024 - 1, "10239 B");
    formats(10 * 1024, "10 KiB");
}

Test(size_format, fractions_truncate)
{
    formats(3ull << 29, "1.5 GiB");
    /* Just under 2 GiB must not claim 2.0 GiB. */
    formats((2ull << 30) - 1, "1.9 GiB");
    formats((1ull << 30) + 1, "1.0 GiB");
    formats(UINT64_MAX, "15.9 EiB");
    char longest[SIZE_FORMAT_MAX];
    size_format((1ull << 60) - 1, longest, sizeof(longest));
    cr_assert_str_eq(longest, "1023.9 PiB");
}

Test(size_format, truncates_to_buffer)
{
    char buf[4] = "xxx";
    size_format(10ull << 30, buf, sizeof(buf));
    cr_assert_str_eq(buf, "10 ");
    size_format(10ull << 30, buf, 0);
    cr_assert_str_eq(buf, "10 ");
}

Test(size, round_trip)
{
    const uint64_t sizes[] = {4096, 512 * 1024, 512ull << 20, 10ull << 30, 1ull << 40};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char buf[SIZE_FORMAT_MAX];
        size_format(sizes[i], buf, sizeof(buf));
        cr_assert_eq(parsed(buf), sizes[i], "\"%s\" does not parse back", buf);
    }
}
