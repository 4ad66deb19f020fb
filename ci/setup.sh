#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine to run migsuite's lab: packages,
# the guest kernel, and a check that the pieces start. Idempotent; run as root.
set -euo pipefail

ARTIFACTS=${MIGSUITE_ARTIFACTS:-/var/lib/migsuite}
[ "$(id -u)" = 0 ] || { echo "ci/setup.sh: run as root (the lab makes network namespaces and starts libvirtd)" >&2; exit 1; }

echo "== packages"
export DEBIAN_FRONTEND=noninteractive
# QEMU and libvirt come from bookworm-backports (QEMU 10.0, libvirt 11.3):
# Debian 12's QEMU 7.2 corrupts guest memory when it live-migrates a guest
# that keeps memory dirty under TCG for more than a few iterations (the
# guest kernel oopses on the destination; measured, see README).
bpo=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > "$bpo"
fi
from_backports=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev)
from_stable=(busybox-static ethtool iproute2 kmod pkg-config util-linux)
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${from_backports[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends "${from_stable[@]}" >/dev/null

# libvirtd resolves its compiled-in default user and group before it reads
# qemu.conf (which says root); libvirt-daemon-system would make them.
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu

echo "== guest kernel (Debian's linux-image-amd64) into $ARTIFACTS/kernel"
if [ ! -s "$ARTIFACTS/kernel/RELEASE" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$work" && apt-get download -qq "$pkg" 2>/dev/null)
  dpkg -x "$work"/*.deb "$work/root"
  release=$(ls "$work/root/lib/modules")
  mkdir -p "$ARTIFACTS/kernel/lib/modules"
  rm -rf "$ARTIFACTS/kernel/lib/modules/$release"
  cp "$work/root/boot/vmlinuz-$release" "$ARTIFACTS/kernel/vmlinuz"
  mv "$work/root/lib/modules/$release" "$ARTIFACTS/kernel/lib/modules/"
  # The package ships no modules.dep; migsuite resolves load order from it.
  depmod -b "$ARTIFACTS/kernel" "$release"
  echo "$release" > "$ARTIFACTS/kernel/RELEASE"
fi
echo "guest kernel: $(cat "$ARTIFACTS/kernel/RELEASE")"

echo "== checks"
libvirtd --version
qemu-system-x86_64 --version | head -1
ip netns add migsuite-setup-check && ip netns del migsuite-setup-check
echo "setup done"
