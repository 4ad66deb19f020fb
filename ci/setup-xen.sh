#!/usr/bin/env bash
# Prepares what migsuite's nested Xen lab host boots, under
# ${MIGSUITE_ARTIFACTS:-/var/lib/migsuite}/xen/:
#   xen            the Xen 4.17 hypervisor (ELF, multiboot), rebuilt from
#                  Debian 12's source package with CONFIG_SHADOW_PAGING=y:
#                  Debian builds it without shadow paging, and PV log-dirty
#                  (live migration of PV guests) needs it ("Failed to enable
#                  logdirty: 95" otherwise).
#   xen.config     the configuration it was built with.
#   dom0/          the dom0 userland: the files of xen-utils-4.17,
#                  xen-utils-common, xenstore-utils, qemu-system-xen's device
#                  model for HVM guests, bash, flock, pv (counts the bytes of
#                  the migration stream), and every library they link against
#                  (Debian 12 packages, unpacked with dpkg -x, not installed).
#   VERSION        versions of the hypervisor and of the tools.
# The dom0 kernel is the guest kernel ci/setup.sh unpacks ($ARTIFACTS/kernel).
# Idempotent; run as root. The system's apt configuration is not touched:
# a private sources list and private lists/cache directories are used.
set -euo pipefail

ARTIFACTS=${MIGSUITE_ARTIFACTS:-/var/lib/migsuite}
OUT="$ARTIFACTS/xen"
[ "$(id -u)" = 0 ] || { echo "ci/setup-xen.sh: run as root" >&2; exit 1; }
started=$(date +%s)

if [ -s "$OUT/VERSION" ] && [ -s "$OUT/xen" ] && [ -d "$OUT/dom0" ]; then
  echo "xen: already prepared in $OUT ($(tr '\n' ' ' < "$OUT/VERSION"))"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "== build dependencies of the hypervisor"
apt-get install -y -qq --no-install-recommends flex bison build-essential dpkg-dev python3 binutils >/dev/null

work=$(mktemp -d /var/tmp/migsuite-setup-xen.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/debs" "$work/src"
# Both from bookworm main, so that the rebuilt hypervisor and the tools are
# the same release (the security pocket's source tarballs answer 404).
cat > "$work/apt/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
          -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
echo "== private package lists (bookworm main, deb and deb-src)"
apt-get "${apt_opts[@]}" update -qq

version=$(apt-cache "${apt_opts[@]}" show xen-hypervisor-4.17-amd64 | awk '/^Version:/{print $2; exit}')
echo "xen packages: $version"

echo "== hypervisor source and Debian's hypervisor configuration"
(cd "$work/src" && apt-get "${apt_opts[@]}" source -qq "xen=$version" >/dev/null)
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'xen-*' | head -1)
[ -d "$srcdir/xen" ] || { echo "ci/setup-xen.sh: no xen/ in the unpacked source ($srcdir)" >&2; exit 1; }
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq "xen-hypervisor-4.17-amd64=$version")
dpkg -x "$work"/debs/xen-hypervisor-4.17-amd64_*.deb "$work/hv"
config=$(find "$work/hv/boot" -name 'xen-*.config' | head -1)
[ -s "$config" ] || { echo "ci/setup-xen.sh: the hypervisor package ships no .config" >&2; exit 1; }
# (bookworm main's 4.17.5 is built with it; the security pocket's 4.17.7
# is not: "# CONFIG_SHADOW_PAGING is not set". Rebuilding makes it certain.)
echo "Debian's build: $(grep -E 'SHADOW_PAGING' "$config" || true)"

echo "== building the hypervisor with CONFIG_SHADOW_PAGING=y (make -j2)"
build_started=$(date +%s)
sed -e '/CONFIG_SHADOW_PAGING/d' "$config" > "$srcdir/xen/.config"
echo "CONFIG_SHADOW_PAGING=y" >> "$srcdir/xen/.config"
make -s -C "$srcdir/xen" XEN_TARGET_ARCH=x86_64 olddefconfig >/dev/null
grep -q '^CONFIG_SHADOW_PAGING=y' "$srcdir/xen/.config" || { echo "ci/setup-xen.sh: olddefconfig dropped CONFIG_SHADOW_PAGING" >&2; exit 1; }
make -s -C "$srcdir/xen" XEN_TARGET_ARCH=x86_64 -j2 > "$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
echo "built in $(( $(date +%s) - build_started )) s"

echo "== dom0 userland"
# The toolstack's packages and the libraries everything links against,
# recursively (only the libraries: xen-utils' python3 dependency is for
# pygrub and friends, which dom0 here does not use).
tools=(xen-utils-4.17 xen-utils-common xenstore-utils qemu-system-xen)
libs=$(apt-cache "${apt_opts[@]}" depends "${tools[@]}" | awk '/Depends: lib/{print $2}' | sort -u)
# shellcheck disable=SC2086
all=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances $libs bash util-linux libgcc-s1 | grep -v '^ ' | grep -v '^<' \
        | grep -E '^(lib|bash$|util-linux$|zlib|gcc-12-base|debconf)' | grep -vE '^(libpam|libsystemd|libselinux|libcap-ng|libaudit|libsemanage|libsepol|libgnutls|libp11|libtasn|libunistring|libidn|libhogweed|libnettle|libgmp|libcrypt|libdb|libsmartcols|libdebconfclient)' \
        | sort -u)
# shellcheck disable=SC2086
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq "${tools[@]}" $all seabios qemu-system-data ipxe-qemu pv)
rm -rf "$work/root" && mkdir -p "$work/root"
for deb in "$work"/debs/*.deb; do
  case "$(basename "$deb")" in xen-hypervisor-*) continue ;; esac
  dpkg -x "$deb" "$work/root"
done

# dom0/ gets the toolstack's files whole, then every shared library they
# need (closure over DT_NEEDED), from the unpacked packages.
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/dom0"
for p in xen-utils-4.17 xen-utils-common xenstore-utils; do
  dpkg -c "$work"/debs/"${p}"_*.deb | awk '{print $6}' | sed 's#^\./##' | while read -r f; do
    [ -z "$f" ] && continue
    src="$work/root/$f"
    if [ -f "$src" ] || [ -L "$src" ]; then
      mkdir -p "$OUT.tmp/dom0/$(dirname "$f")" && cp -a "$src" "$OUT.tmp/dom0/$f"
    fi
  done
done
# qemu-system-xen's device model (one binary) and the data files it loads.
mkdir -p "$OUT.tmp/dom0/usr/libexec"
cp -a "$work/root/usr/libexec/xen-qemu-system-i386" "$OUT.tmp/dom0/usr/libexec/"
# Its firmware and option ROMs (HVM guests), the BIOS hvmloader loads.
mkdir -p "$OUT.tmp/dom0/usr/share/qemu"
for f in "$work"/root/usr/share/qemu/{vgabios*.bin,efi-*.rom,kvmvapic.bin,linuxboot*.bin,multiboot*.bin} "$work"/root/usr/share/qemu/keymaps; do
  [ -e "$f" ] && cp -a "$f" "$OUT.tmp/dom0/usr/share/qemu/"
done
cp -a "$work/root/usr/share/seabios" "$OUT.tmp/dom0/usr/share/"
mkdir -p "$OUT.tmp/dom0/usr/lib/ipxe" && cp -a "$work/root/usr/lib/ipxe/qemu" "$OUT.tmp/dom0/usr/lib/ipxe/"
mkdir -p "$OUT.tmp/dom0/bin" "$OUT.tmp/dom0/usr/bin"
cp -a "$work/root/bin/bash" "$OUT.tmp/dom0/bin/bash"
cp -a "$work/root/usr/bin/flock" "$OUT.tmp/dom0/usr/bin/flock"
# pv relays the migration stream unbuffered and counts its bytes.
cp -a "$work/root/usr/bin/pv" "$OUT.tmp/dom0/usr/bin/pv"
rm -rf "$OUT.tmp/dom0/usr/share/doc" "$OUT.tmp/dom0/usr/share/man" "$OUT.tmp/dom0/usr/share/lintian" \
       "$OUT.tmp/dom0/usr/lib/python3" "$OUT.tmp/dom0/etc/init.d" "$OUT.tmp/dom0/lib/systemd" "$OUT.tmp/dom0/usr/lib/systemd"

libdirs=("$work/root/lib/x86_64-linux-gnu" "$work/root/usr/lib/x86_64-linux-gnu" "$work/root/lib64"
         "$work/root/usr/lib/xen-4.17/lib" "$work/root/usr/lib/xen-4.17/lib/x86_64-linux-gnu")
find_lib() {
  for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  return 1
}
declare -A have=()
queue=()
while IFS= read -r -d '' f; do
  if head -c4 "$f" 2>/dev/null | grep -q 'ELF'; then queue+=("$f"); fi
done < <(find "$OUT.tmp/dom0" -type f -print0)
missing=()
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}; queue=("${queue[@]:1}")
  for need in $(readelf -d "$f" 2>/dev/null | awk '/NEEDED/{gsub(/[\[\]]/,"",$5); print $5}'); do
    [ -n "${have[$need]:-}" ] && continue
    have[$need]=1
    if src=$(find_lib "$need"); then
      rel=${src#"$work/root/"}
      mkdir -p "$OUT.tmp/dom0/$(dirname "$rel")"
      cp -L "$src" "$OUT.tmp/dom0/$rel"
      queue+=("$OUT.tmp/dom0/$rel")
    else
      missing+=("$need")
    fi
  done
done
# The dynamic loader and libgcc_s (xl aborts without it: "libgcc_s.so.1
# must be installed for pthread_cancel"; it is dlopen()ed, not NEEDED).
for l in ld-linux-x86-64.so.2 libgcc_s.so.1; do
  src=$(find_lib "$l") || { echo "ci/setup-xen.sh: $l not in the unpacked packages" >&2; exit 1; }
  rel=${src#"$work/root/"}; mkdir -p "$OUT.tmp/dom0/$(dirname "$rel")"; cp -L "$src" "$OUT.tmp/dom0/$rel"
done
mkdir -p "$OUT.tmp/dom0/lib64" && ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$OUT.tmp/dom0/lib64/ld-linux-x86-64.so.2"
[ ${#missing[@]} -eq 0 ] || echo "ci/setup-xen.sh: warning: libraries not found in the packages: ${missing[*]}" >&2

cp "$srcdir/xen/xen" "$OUT.tmp/xen"
cp "$srcdir/xen/.config" "$OUT.tmp/xen.config"
{ echo "hypervisor=$version+shadow"; echo "tools=$version"; } > "$OUT.tmp/VERSION"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "xen: $(tr '\n' ' ' < "$OUT/VERSION") in $OUT: hypervisor $(du -h "$OUT/xen" | cut -f1), dom0 userland $(du -sh "$OUT/dom0" | cut -f1)"
echo "setup-xen done in $(( $(date +%s) - started )) s"
