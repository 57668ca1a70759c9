#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for embers, idempotently: Debian packages, npm
# dependencies, the TypeScript build and the guest kit (kernel + initramfs, cached in
# /var/cache/embers). Safe to run again: each step is skipped when already done.
# --with-firecracker-kernel also builds the firecracker-config kit (a kernel compile: about 25
# minutes on 2 cores the first time, then cached); the tests boot it, the demo does not.
set -euo pipefail
with_fc_kernel=false
for arg in "$@"; do
  case "$arg" in
    --with-firecracker-kernel) with_fc_kernel=true ;;
    *) echo "setup: unknown option $arg (known: --with-firecracker-kernel)" >&2; exit 64 ;;
  esac
done
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: embers needs root (network namespaces, tap devices, loop mounts): run with sudo" >&2
  exit 77
fi

PACKAGES=(
  qemu-system-x86 busybox-static e2fsprogs nftables iproute2 rsync xfsprogs kmod xz-utils
  cpio coreutils util-linux mount gcc libc6-dev skopeo docker-registry openssl zstd attr curl ca-certificates
  # kernel builds: the Debian kit's virtio_mmio module, the firecracker-config kernel
  make gcc-12 binutils bc bison flex perl libelf-dev libssl-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # docker-registry starts a system service on install; embers' tests start their own.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund --ignore-scripts >/dev/null
fi
echo "setup: building" >&2
npm run --silent build

# The native tools, each cached as $cache/native/NAME-<12 hex of the sha256 of its sources, in
# the order given> (as src/util/native-tool.ts looks for them), compiled aside, then renamed:
# the Uffd page server for Firecracker (src/vmm/firecracker/uffd-handler.ts) and the
# page-cache tool for QEMU working sets (src/memory/page-cache.ts).
cache="${EMBERS_CACHE:-/var/cache/embers}"
build_native() { # NAME SOURCE.c [HEADER...]
  local name="$1"
  shift
  local out
  out="$cache/native/$name-$(cat "$@" | sha256sum | cut -c1-12)"
  if [ ! -x "$out" ]; then
    echo "setup: building $out" >&2
    mkdir -p "$cache/native"
    gcc -O2 -Wall -Wextra -pthread -o "$out.tmp-$$" "$1"
    mv "$out.tmp-$$" "$out"
  fi
}
build_native uffd-handler native/uffd-handler.c native/sha256.h
build_native page-cache native/page-cache.c

echo "setup: guest kit (built once, then cached)" >&2
node bin/embers.js guest build --json >/dev/null
# The firecracker-config kit: a kernel compiled from Debian's linux-source with Firecracker's
# guest config (about 25 minutes on 2 cores on a fresh machine; cached in /var/cache/embers,
# so skipped on a warm one). The acpi=off e2e tests boot it.
if [ "$with_fc_kernel" = true ]; then
  echo "setup: firecracker-config guest kit (a kernel build the first time, then cached)" >&2
  node bin/embers.js guest build-kernel --json >/dev/null
fi
echo "setup: done" >&2
