/* fuzz_nbd.c - libFuzzer target for the NBD handshake and request parsing.
 *
 * Each input is a whole client byte stream: it is put in a memfd and served
 * by the real protocol code (one serving thread, so the run is
 * deterministic) against in-memory exports with dirty bitmaps (meta
 * contexts qemu:dirty-bitmap:s1 ...), with replies going to
 * /dev/null. A crash, sanitizer report, leak or hang is a bug; a rejected
 * input is not.
 */
#include "nbd-server/mem_export.h"
#include "nbd-server/server.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static struct nbd_server *server(void)
{
    static struct nbd_server *srv;
    if (srv)
        return srv;
    struct mem_catalog *cat = mem_catalog_new();
    if (!cat || mem_catalog_add(cat, "a", 1 << 20, false) < 0 ||
        mem_catalog_add(cat, "ro", 64 << 10, true) < 0 ||
        mem_catalog_add_bitmap(cat, "a", "s1") < 0 || mem_catalog_add_bitmap(cat, "a", "s2") < 0 ||
        mem_catalog_add_bitmap(cat, "ro", "s0") < 0)
        abort();
    struct nbd_server_config cfg;
    nbd_server_config_defaults(&cfg);
    cfg.threads = 1;
    cfg.min_block = 512; /* exercises the alignment checks too */
    cfg.max_payload = 256 << 10;
    srv = nbd_server_new(&cfg, &mem_catalog_ops, cat);
    if (!srv)
        abort();
    return srv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nbd_server *srv = server();
    int in = memfd_create("fuzz-input", MFD_CLOEXEC);
    int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (in < 0 || out < 0)
        abort();
    if (size > 0 && write(in, data, size) != (ssize_t)size)
        abort();
    if (lseek(in, 0, SEEK_SET) != 0)
        abort();
    nbd_server_serve(srv, in, out);
    return 0;
}
