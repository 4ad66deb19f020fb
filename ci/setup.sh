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
# The storage driver gives each host a pool that guest files are uploaded to
# (libvirt's volume upload) and that copy-storage migration pre-creates in.
from_backports=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage libvirt-clients libvirt-dev)
# chromium: tests/page.rs lays the HTML report out in a headless browser.
from_stable=(busybox-static ethtool iproute2 kmod pkg-config util-linux chromium)
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

echo "== CRIU (Debian unstable's package, not installed) into $ARTIFACTS/criu"
# Debian 12's criu 3.17 fails `criu check` here ("vdso: Unexpected rt vDSO
# area bounds"). Debian 13's 4.1.1 passes it but cannot dump an IPv4 socket
# on Linux >= 6.16 ("sockets: Can't get 1:16 opt: Operation not supported":
# SO_PASSCRED is now refused on inet sockets), and the workload agent has
# two; 4.2 has the fix, and so far only unstable ships it. It is unpacked
# with its libraries into a prefix and run through that prefix's dynamic
# loader, so nothing of the system changes. migsuite prefers a system criu
# when it is recent enough and passes `criu check`.
criu_prefix="$ARTIFACTS/criu"
if [ ! -s "$criu_prefix/VERSION" ] || ! dpkg --compare-versions "$(cat "$criu_prefix/VERSION")" ge 4.2; then
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" > "$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  # criu and everything it links against, down to unstable's libc and loader.
  pkgs=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | sort -u)
  # shellcheck disable=SC2086
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download -qq $pkgs)
  rm -rf "$criu_prefix.tmp" && mkdir -p "$criu_prefix.tmp"
  for deb in "$apt_dir"/debs/*.deb; do dpkg -x "$deb" "$criu_prefix.tmp"; done
  apt-cache "${apt_opts[@]}" show criu | awk '/^Version:/{print $2; exit}' > "$criu_prefix.tmp/VERSION"
  rm -rf "$criu_prefix" "$apt_dir" && mv "$criu_prefix.tmp" "$criu_prefix"
fi
criu_run=("$criu_prefix/usr/lib64/ld-linux-x86-64.so.2"
          --library-path "$criu_prefix/lib/x86_64-linux-gnu:$criu_prefix/usr/lib/x86_64-linux-gnu"
          "$criu_prefix/usr/sbin/criu")
echo "criu: $("${criu_run[@]}" --version | head -1) (Debian package $(cat "$criu_prefix/VERSION"))"
"${criu_run[@]}" check || echo "ci/setup.sh: warning: \`criu check\` is not happy here; openvz cases will say why" >&2
# Post-copy: CRIU serves lazy pages through 4 MiB pipes. Without
# CAP_SYS_RESOURCE (this sandbox's root lacks it) a pipe may not exceed
# fs.pipe-max-size (1 MiB by default), and CRIU then fails every page
# request ("page-pipe: splice: -1: Bad file descriptor").
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then
  sysctl -q -w fs.pipe-max-size=4194304 ||
    echo "ci/setup.sh: warning: cannot raise fs.pipe-max-size; openvz postcopy cases will say why" >&2
fi
echo "fs.pipe-max-size: $(cat /proc/sys/fs/pipe-max-size)"

echo "== Xen lab host (xen-pv rows)"
bash "$(dirname "$0")/setup-xen.sh"

echo "== stand-in lab of machines (tests/real_lab.rs): the hosts' disk image"
# openssh-client: the runner reaches the stand-in's hosts over qemu+ssh;
# openssl: the stand-in's certificates, and every simulated lab's for TLS
# streams (made for each lab, whatever its cases).
apt-get install -y -qq --no-install-recommends openssh-client openssl mmdebstrap e2fsprogs qemu-utils >/dev/null
bash "$(dirname "$0")/standin-machines.sh" image

echo "== cargo-insta (reviewing snapshot diffs: cargo insta review)"
command -v cargo-insta >/dev/null || cargo install --quiet --locked cargo-insta

echo "== checks"
libvirtd --version
qemu-system-x86_64 --version | head -1
ip netns add migsuite-setup-check && ip netns del migsuite-setup-check
echo "setup done"
