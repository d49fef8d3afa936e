# vsan: one non-recursive Makefile. Every binary lands in build/ (the top
# level already has a vsan/ folder, so the CLI cannot live beside it).
#
#   make            build build/vsand, build/vsan and build/vsan-fuse
#   make deps       install every Debian package needed (idempotent)
#   make run        build, start a standalone node with a demo volume
#   make check      unit, fuzz (short) and integration tests
#   make check SANITIZE=1   the same, built with ASan + UBSan
#   make check-long the tests too long for check (4,000 volumes, power cuts)
#   make fuzz       a longer libFuzzer run of the NBD parser
#   make bench      fio against vsand and nbdkit side by side (and build/nbdload
#                   for TLS)
#   make bench-cluster  what the policing protocol costs, on a 3-node lab
#   make bench-pool     diskless access and placement, on 4- and 2-node labs
#   make bench-failover failover times (vsand killed, node stopped, node cut)
#   make soak       the lost-write checker with its nemesis for SOAK_SECONDS (600)
#                   on a 3-node lab (t-lab-checker's long form), then on 5 nodes
#                   with the volume's 2 copies placed among them (make soak5 alone)
#   make install    vsand, vsan, vsan-fuse and the systemd unit under PREFIX (/usr/local)

CC      ?= cc
B       := build
PKGS    := libqb inih json-c libcpg libvotequorum libcmap libisal gnutls libmnl
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -MMD -MP \
           -I. $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -pthread

ifeq ($(SANITIZE),1)
B       := build/sanitize
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# The NBD protocol, independent of what it serves (see nbd-server/export.h).
NBD_SRCS := nbd-server/handshake.c nbd-server/transmission.c nbd-server/server.c common/netaddr.c \
            nbd-server/conn_io.c nbd-server/tls.c
# Membership, quorum and per-region write priority (policing/).
POLICING_SRCS := policing/messages.c policing/placement.c policing/cut.c policing/syncstream.c policing/protocol.c policing/priority.c policing/services.c \
                 policing/cluster_local.c policing/cluster_corosync.c
# The mirror link's wire format and handshake: pure, no I/O (mirror/).
MIRROR_PURE_SRCS := mirror/wire.c mirror/auth.c mirror/stream.c
# The node: store, volume layer, config, admin server.
CORE_SRCS := $(POLICING_SRCS) $(MIRROR_PURE_SRCS) volume/voltable.c volume/access.c common/identity.c volume/owners.c volume/tokens.c vsan/config.c common/log.c common/size.c store/store.c store/svol.c volume/volume.c volume/snapshots.c volume/snapexport.c volume/rollback.c \
             vsan/admin.c vsan/admin_cmds.c vsan/admin_snap.c vsan/admin_access.c vsan/admin_ident.c vsan/admin_pool.c vsan/netif.c vsan/service.c
CORE_SRCS += store/actlog.c store/fileio.c store/gsync.c store/snap.c store/bitmap.c mirror/replicas.c mirror/link.c
# The mirror engine, bottom layer first (mirror/engine_int.h).
MIRROR_ENGINE_SRCS := mirror/mvol.c mirror/dirty.c mirror/lost.c mirror/registry.c mirror/workers.c mirror/cut.c \
                      mirror/reads.c mirror/snapio.c mirror/replicate.c mirror/activity.c mirror/verify.c \
                      mirror/reconcile.c mirror/write.c mirror/resync.c mirror/serve.c mirror/engine.c
CORE_SRCS += $(MIRROR_ENGINE_SRCS)
# The network API: HTTPS and JSON on libmicrohttpd (api/api.h).
API_SRCS := api/server.c api/routes.c api/creds.c
VSAND_SRCS := $(CORE_SRCS) $(NBD_SRCS) $(API_SRCS) vsan/api_glue.c vsan/rebuild.c vsan/vsand.c
# The CLI: admin requests, and backup, restore and clone over NBD (libnbd).
CLI_SRCS   := cli/cli.c cli/admin_call.c cli/cli_format.c cli/rbddiff.c cli/backup.c cli/rollback.c cli/replica.c cli/access.c cli/ident.c \
              cli/nbd_client.c common/size.c
# vsan-fuse, the failover client: libfuse3 + libnbd, nothing of the node.
FUSE_PURE_SRCS := fuse/replicas.c
FUSE_SRCS  := $(FUSE_PURE_SRCS) fuse/conn.c fuse/client.c fuse/fs.c fuse/main.c common/log.c
FUSE_PKGS  := fuse3 libnbd libqb

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

all: $(B)/vsand $(B)/vsan $(B)/vsan-fuse

$(B)/vsand: $(call obj,$(VSAND_SRCS))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs libmicrohttpd)

$(B)/obj/api/%.o: CFLAGS += $(shell pkg-config --cflags libmicrohttpd)

$(B)/vsan: $(call obj,$(CLI_SRCS))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs libnbd)

$(B)/obj/cli/%.o: CFLAGS += $(shell pkg-config --cflags libnbd)

$(B)/vsan-fuse: $(call obj,$(FUSE_SRCS))
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs $(FUSE_PKGS)) -pthread

$(B)/obj/fuse/%.o: CFLAGS += $(shell pkg-config --cflags $(FUSE_PKGS))

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# ---- tests -----------------------------------------------------------------

UNIT_TESTS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(wildcard tests/unit/test_*.c))
TEST_LIB_SRCS := nbd-server/mem_export.c $(NBD_SRCS) $(CORE_SRCS) $(FUSE_PURE_SRCS)
CRITERION_LIBS := $(shell pkg-config --libs criterion) $(shell pkg-config --libs libnbd)
TEST_CFLAGS := $(shell pkg-config --cflags criterion libnbd)

$(B)/tests/%: tests/unit/%.c $(call obj,$(TEST_LIB_SRCS))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CRITERION_LIBS)

# Criterion passes a test whose worker LeakSanitizer finds leaks in as it
# exits: every sanitizer report goes to a file under UNIT_SAN, and any
# fails the run (with a plain build there are none).
UNIT_SAN := $(B)/unit-sanitizer
unit: $(UNIT_TESTS)
	@rm -rf $(UNIT_SAN) && mkdir -p $(UNIT_SAN)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; \
	  ASAN_OPTIONS="$${ASAN_OPTIONS:+$$ASAN_OPTIONS:}log_path=$(UNIT_SAN)/$${t##*/}" \
	  UBSAN_OPTIONS="$${UBSAN_OPTIONS:+$$UBSAN_OPTIONS:}print_stacktrace=1:log_path=$(UNIT_SAN)/$${t##*/}" \
	  $$t --jobs 1; done
	@if [ -n "$$(ls -A $(UNIT_SAN))" ]; then head -n 40 $(UNIT_SAN)/*; \
	  echo "unit: sanitizer reports in $(UNIT_SAN)"; exit 1; fi

# libFuzzer needs clang; the fuzzer links the protocol code with the memory
# backend only, so each input runs a whole handshake + transmission.
FUZZ_BIN := build/fuzz/fuzz_nbd
FUZZ_FLAGS := -std=gnu11 -D_GNU_SOURCE -g -O1 -I. -pthread -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
$(FUZZ_BIN): tests/fuzz/fuzz_nbd.c nbd-server/mem_export.c $(NBD_SRCS) $(wildcard nbd-server/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_nbd.c nbd-server/mem_export.c $(NBD_SRCS) \
	  $(shell pkg-config --libs libqb gnutls)

# The mirror link's header, payload and handshake checks, and its server
# side (handshake, then requests) over loopback TCP with a fake backend.
FUZZ_MIRROR_SRCS := $(MIRROR_PURE_SRCS) mirror/link.c common/netaddr.c
FUZZ_MIRROR_BIN := build/fuzz/fuzz_mirror
$(FUZZ_MIRROR_BIN): tests/fuzz/fuzz_mirror.c $(FUZZ_MIRROR_SRCS) $(wildcard mirror/*.h common/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_mirror.c $(FUZZ_MIRROR_SRCS) \
	  $(shell pkg-config --libs libisal gnutls libqb)

# FUZZ_SECONDS is the NBD run's; the mirror target is smaller and gets half.
FUZZ_SECONDS ?= 20
fuzz-short: $(FUZZ_BIN) $(FUZZ_MIRROR_BIN)
	@mkdir -p build/fuzz/corpus build/fuzz/mirror-corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	  build/fuzz/corpus tests/fuzz/seeds
	$(FUZZ_MIRROR_BIN) -max_total_time=$$(( ($(FUZZ_SECONDS) + 1) / 2 )) -max_len=4096 -timeout=10 \
	  build/fuzz/mirror-corpus tests/fuzz/mirror-seeds

fuzz: FUZZ_SECONDS = 600
fuzz: fuzz-short

# Drives a cluster transport from the command line (t-corosync.sh).
CLUSTER_PROBE := $(B)/tests/cluster_probe
$(CLUSTER_PROBE): tests/tools/cluster_probe.c \
                  $(call obj,policing/cluster_corosync.c policing/cluster_local.c)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The FUSE fault layer for power cuts and failing disks (t-powercut.sh).
FAULTFS := $(B)/tests/faultfs
$(FAULTFS): $(call obj,tests/tools/faultfs.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs fuse3) -pthread

$(B)/obj/tests/tools/faultfs.o: CFLAGS += $(shell pkg-config --cflags fuse3)

# The lost-write checker (tests/checker/): writers with failover over NBD,
# readers judging what they read meanwhile, a snapshotter judging the
# snapshots it cuts, and the verification of the replicas against their
# journal.
CHECKER_SRCS := tests/checker/block.c tests/checker/journal.c tests/checker/conn.c \
                tests/checker/writer.c tests/checker/judge.c tests/checker/reader.c \
                tests/checker/verify.c tests/checker/cutlog.c tests/checker/snapshotter.c \
                tests/checker/checker.c common/log.c common/size.c
CHECKER := $(B)/checker
$(CHECKER): $(call obj,$(CHECKER_SRCS))
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libnbd libqb libisal) -pthread

$(B)/obj/tests/checker/%.o: CFLAGS += $(shell pkg-config --cflags libnbd)

# The benches' load generator for what fio cannot run (NBD over TLS).
NBDLOAD := $(B)/nbdload
$(NBDLOAD): $(call obj,tests/bench/nbdload.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libnbd json-c) -pthread

$(B)/obj/tests/bench/%.o: CFLAGS += $(shell pkg-config --cflags libnbd)

# The engine's test runs whole nodes in one process: a cluster of several
# members and a proxy for their mirror links (tests/unit/).
$(B)/tests/test_engine: $(call obj,tests/unit/fake_cluster.c tests/unit/mirror_proxy.c)

# The CLI's pure module: the rbd diff v2 stream.
$(B)/tests/test_rbddiff: $(call obj,cli/rbddiff.c)

# The checker's unit tests link the checker's pure parts.
$(B)/tests/test_checker_block: $(call obj,tests/checker/block.c)
$(B)/tests/test_checker_journal: $(call obj,tests/checker/journal.c)
$(B)/tests/test_checker_judge: $(call obj,tests/checker/judge.c tests/checker/block.c)
$(B)/tests/test_checker_cutlog: $(call obj,tests/checker/cutlog.c)

integration: all $(CLUSTER_PROBE) $(CHECKER) $(FAULTFS) $(NBDLOAD)
	@tests/integration/run-all.sh $(B)

check: deps
	@$(MAKE) --no-print-directory all unit fuzz-short integration
	@echo "make check: all test suites passed"

check-long: deps
	@$(MAKE) --no-print-directory all $(CLUSTER_PROBE) $(CHECKER) $(FAULTFS)
	@VT_LONG=1 tests/integration/run-all.sh $(B)

SOAK_SECONDS ?= 600
soak: all $(CHECKER)
	@CHECKER_SECONDS=$(SOAK_SECONDS) timeout --kill-after=10 $$(( $(SOAK_SECONDS) + 600 )) \
	  bash tests/integration/t-lab-checker.sh $(B)
	@$(MAKE) --no-print-directory soak5

# The same on 5 nodes, the volume with 2 copies (its lab: corosync's token
# at 3000 ms and normal priority, see t-lab-checker).
soak5: all $(CHECKER)
	@LAB_NODES=5 CHECKER_REPLICAS=2 CHECKER_SECONDS=$(SOAK_SECONDS) \
	  timeout --kill-after=10 $$(( $(SOAK_SECONDS) + 600 )) bash tests/integration/t-lab-checker.sh $(B)

bench: all $(NBDLOAD)
	@tests/bench/bench.sh $(B)

bench-cluster: all
	@tests/bench/cluster-bench.sh $(B)

bench-pool: all
	@tests/bench/pool-bench.sh $(B)

bench-failover: all
	@tests/bench/failover.sh $(B)

deps:
	@deploy/install-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@deploy/demo.sh $(B)

# The paths deploy/systemd/vsand.service and docs/DEPLOY.md use.
PREFIX ?= /usr/local
install: all
	install -D -m 0755 $(B)/vsand $(DESTDIR)$(PREFIX)/sbin/vsand
	install -D -m 0755 $(B)/vsan $(DESTDIR)$(PREFIX)/bin/vsan
	install -D -m 0755 $(B)/vsan-fuse $(DESTDIR)$(PREFIX)/bin/vsan-fuse
	install -D -m 0644 deploy/systemd/vsand.service $(DESTDIR)/etc/systemd/system/vsand.service
	install -d -m 0755 $(DESTDIR)/etc/vsan

clean:
	rm -rf build

.PHONY: all unit fuzz fuzz-short integration check check-long soak soak5 bench bench-cluster bench-pool bench-failover deps run install \
        clean

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
