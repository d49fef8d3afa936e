/* block.c - encodes and checks the checker's blocks (see block.h).
 *
 * Layout, little-endian: magic (8), writer (4), crc (4), block (8),
 * seq (8), then filler. The CRC32C (ISA-L's crc32_iscsi, as the mirror
 * link uses) covers the whole block with the crc field zeroed, so any
 * flipped byte, header or filler, is caught. The filler is a splitmix64
 * stream seeded from the header: cheap, and different for every write.
 */
#include "tests/checker/block.h"

#include <endian.h>
#include <errno.h>
#include <isa-l/crc.h>
#include <string.h>

#define CHK_MAGIC 0x314b48434e415356ull /* "VSANCHK1" read as little-endian */
#define OFF_MAGIC 0
#define OFF_WRITER 8
#define OFF_CRC 12
#define OFF_BLOCK 16
#define OFF_SEQ 24
#define HDR_SIZE 32

static void put32(unsigned char *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, sizeof(v));
}

static void put64(unsigned char *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof(v));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The CRC of the block as if its crc field were zero, without copying it. */
static uint32_t block_crc(const unsigned char *b)
{
    static const unsigned char zero[4];
    uint32_t crc = ~0u;

    crc = crc32_iscsi((unsigned char *)b, OFF_CRC, crc);
    crc = crc32_iscsi((unsigned char *)zero, sizeof(zero), crc);
    crc = crc32_iscsi((unsigned char *)b + OFF_CRC + 4, CHK_BLOCK_SIZE - OFF_CRC - 4, crc);
    return ~crc;
}

void chk_block_encode(void *buf, uint32_t writer, uint64_t block, uint64_t seq)
{
    unsigned char *b = buf;
    uint64_t state = block * 0x100000001b3ull ^ seq << 20 ^ writer;

    put64(b + OFF_MAGIC, CHK_MAGIC);
    put32(b + OFF_WRITER, writer);
    put32(b + OFF_CRC, 0);
    put64(b + OFF_BLOCK, block);
    put64(b + OFF_SEQ, seq);
    for (unsigned off = HDR_SIZE; off < CHK_BLOCK_SIZE; off += 8)
        put64(b + off, splitmix64(&state));
    put32(b + OFF_CRC, block_crc(b));
}

static int all_zero(const unsigned char *b)
{
    for (unsigned i = 0; i < CHK_BLOCK_SIZE; i++)
        if (b[i])
            return 0;
    return 1;
}

int chk_block_decode(const void *buf, struct chk_hdr *out)
{
    const unsigned char *b = buf;

    if (get64(b + OFF_MAGIC) != CHK_MAGIC)
        return all_zero(b) ? -ENODATA : -EBADMSG;
    if (get32(b + OFF_CRC) != block_crc(b))
        return -EBADMSG;
    out->writer = get32(b + OFF_WRITER);
    out->block = get64(b + OFF_BLOCK);
    out->seq = get64(b + OFF_SEQ);
    return 0;
}

int chk_block_check(const void *buf, uint64_t block, uint32_t writers, uint64_t *seq)
{
    struct chk_hdr h;
    int r = chk_block_decode(buf, &h);

    if (r == -ENODATA) {
        *seq = 0;
        return 0;
    }
    if (r < 0)
        return r;
    if (h.block != block || writers == 0 || h.writer != block % writers || h.seq == 0)
        return -EDOM;
    *seq = h.seq;
    return 0;
}
