#!/usr/bin/env bash
# Installs every Debian package vsan needs to build, run, test and benchmark.
# Idempotent: packages already present are skipped, so `make deps` is cheap
# on a machine that has them.
set -euo pipefail

packages=(
  # build
  build-essential pkg-config clang libclang-rt-14-dev
  libqb-dev libinih-dev libjson-c-dev libnbd-dev libfuse3-dev
  libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev
  libcriterion-dev libisal-dev libgnutls28-dev libmnl-dev libmicrohttpd-dev
  # certtool and psktool, for deploy/gen-config's TLS credentials
  gnutls-bin
  # run
  corosync fuse3 iproute2 nftables
  # real NBD clients and peers used by tests and the benchmark
  libnbd-bin python3-libnbd nbdkit qemu-utils qemu-system-common fio
  e2fsprogs util-linux procps
  # an HTTPS client for the network API's tests
  curl
  # file systems with FICLONERANGE, for t-snap-reflink (the kernel has them)
  xfsprogs btrfs-progs
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
