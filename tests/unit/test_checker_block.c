/* test_checker_block.c - the lost-write checker's block format
 * (tests/checker/block.c): what the verifier trusts when it judges a
 * replica. An encoded block decodes to what was written; any flipped byte,
 * in the header or the filler, is caught; a block in the wrong place or
 * from the wrong writer is told apart from a torn one; zeroes read as
 * never written. */
#include "tests/checker/block.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

static unsigned char buf[CHK_BLOCK_SIZE];

Test(checker_block, round_trip)
{
    struct chk_hdr h;

    chk_block_encode(buf, 3, 1234567, 42);
    cr_assert_eq(chk_block_decode(buf, &h), 0);
    cr_assert_eq(h.writer, 3);
    cr_assert_eq(h.block, 1234567);
    cr_assert_eq(h.seq, 42);
}

Test(checker_block, every_write_has_its_own_bytes)
{
    static unsigned char other[CHK_BLOCK_SIZE];

    chk_block_encode(buf, 1, 9, 1);
    chk_block_encode(other, 1, 9, 2);
    /* Beyond the header too: a stale filler under a fresh header shows. */
    cr_assert_neq(memcmp(buf + 64, other + 64, CHK_BLOCK_SIZE - 64), 0);
    chk_block_encode(other, 1, 9, 1);
    cr_assert_eq(memcmp(buf, other, CHK_BLOCK_SIZE), 0, "encoding is deterministic (resends)");
}

Test(checker_block, any_flipped_byte_is_caught)
{
    struct chk_hdr h;

    for (unsigned off = 0; off < CHK_BLOCK_SIZE; off += 7) {
        chk_block_encode(buf, 2, 77, 5);
        buf[off] ^= 0x10;
        cr_assert_eq(chk_block_decode(buf, &h), -EBADMSG, "byte %u flipped", off);
    }
    chk_block_encode(buf, 2, 77, 5);
    buf[CHK_BLOCK_SIZE - 1] ^= 1;
    cr_assert_eq(chk_block_decode(buf, &h), -EBADMSG, "last byte flipped");
}

Test(checker_block, torn_block_is_caught)
{
    static unsigned char newer[CHK_BLOCK_SIZE];
    struct chk_hdr h;

    chk_block_encode(buf, 0, 8, 1);
    chk_block_encode(newer, 0, 8, 2);
    memcpy(buf, newer, 512); /* the first sector of the newer write only */
    cr_assert_eq(chk_block_decode(buf, &h), -EBADMSG);
}

Test(checker_block, zeroes_are_never_written)
{
    struct chk_hdr h;
    uint64_t seq = 99;

    memset(buf, 0, sizeof(buf));
    cr_assert_eq(chk_block_decode(buf, &h), -ENODATA);
    cr_assert_eq(chk_block_check(buf, 5, 4, &seq), 0);
    cr_assert_eq(seq, 0);
    buf[100] = 1;
    cr_assert_eq(chk_block_decode(buf, &h), -EBADMSG, "not zero, not a block: garbage");
}

Test(checker_block, check_wants_the_right_place_and_writer)
{
    uint64_t seq = 0;

    /* 4 writers: block 10 belongs to writer 2. */
    chk_block_encode(buf, 2, 10, 7);
    cr_assert_eq(chk_block_check(buf, 10, 4, &seq), 0);
    cr_assert_eq(seq, 7);
    cr_assert_eq(chk_block_check(buf, 14, 4, &seq), -EDOM, "a block written elsewhere");
    chk_block_encode(buf, 1, 10, 7);
    cr_assert_eq(chk_block_check(buf, 10, 4, &seq), -EDOM, "the wrong writer");
    chk_block_encode(buf, 2, 10, 0);
    cr_assert_eq(chk_block_check(buf, 10, 4, &seq), -EDOM, "seq 0 is never written");
    chk_block_encode(buf, 2, 10, 7);
    buf[20] ^= 1;
    cr_assert_eq(chk_block_check(buf, 10, 4, &seq), -EBADMSG);
}
