#!/usr/bin/env bash
# A stand-in for a REAL lab, built of machines: hosts a and b are virtual
# machines with a kernel of their own (Debian 12, booted under QEMU, which
# offers them AMD-V so that their libvirt runs guests with KVM), running
# systemd, sshd, libvirtd (Debian's packages, Debian's defaults: QEMU as
# libvirt-qemu, dynamic ownership, AppArmor) and `migsuite host-agent`.
# Hosts c and d are the same Debian booted as Xen's dom0 (Xen 4.17 from
# ci/setup-xen.sh, Debian's xen-utils and its init script): a Xen lab,
# reached over ssh to dom0, where `xl` runs. No
# file system is shared with this machine: everything a host gets is in its
# disk image and a configuration disk (a tar archive), as a lab's owner
# would install it. The runner machine is the network namespace msr-run,
# which reaches the hosts only over the management network, over ssh
# (qemu+ssh) or TLS (qemu+tls), never unauthenticated TCP.
#
#   ci/standin-machines.sh image                 the hosts' disk image (cached)
#   ci/standin-machines.sh up --migsuite BIN [--pairs kvm,xen]
#                                                boot the lab's pairs (kvm: a
#                                                and b, the default; xen: c and
#                                                d), write their inventories
#   ci/standin-machines.sh exec CMD [ARG...]     run CMD on the runner machine
#   ci/standin-machines.sh down                  remove everything `up` made
#
# Read `host_config` as the recipe for a real host: every file it writes is
# one a lab's owner writes on theirs.
#
# Networks (bridges of namespace msr-net, the lab's switches):
#   mgmt  10.248.0.0/24  runner .254, hosts .1 to .4: ssh, libvirt (TLS
#                        16514), host agents (UDP 7003), heartbeats to the
#                        runner's monitor (UDP 7001)
#   lan   10.247.0.0/24  guest LAN: each host's br0 (c and d: xenbr0), no
#                        address; the guest .100, the runner's observer .254
#   mig   10.246.0.0/24  migration network: hosts .1 to .4 (migration and
#                        NBD streams, ports 49152-49215; CRIU's page server,
#                        TCP 27027; xl's stream, TCP 5500; the host
#                        agents' measurement of it, TCP 7004)
# Inventories (one pair each, as a real lab's runner has): hosts a and b in
# /run/migsuite-standin/lab-ssh.yaml and lab-tls.yaml, the Xen hosts c and
# d in lab-xen.yaml.
set -euo pipefail

STATE=/run/migsuite-standin
ARTIFACTS=${MIGSUITE_ARTIFACTS:-/var/lib/migsuite}
IMAGE=$ARTIFACTS/standin
# Bump when the image's recipe changes: `image` rebuilds then.
IMAGE_RECIPE=6
RUNNER=msr-run
FABRIC=msr-net
# The pairs `up` can boot: a and b (KVM and CRIU), and the Xen hosts c and
# d (the same image, booted as dom0 under Xen). Four TCG hosts on a small
# machine slow each other: boot the pairs the runs need.
KVM_HOSTS=(a b)
XEN_HOSTS=(c d)
HOSTS=()
XEN=$ARTIFACTS/xen/xen
# dom0's share of a Xen host's memory; the rest is for its domUs.
DOM0_MEMORY=1024
MGMT=10.248.0
LAN=10.247.0
MIG=10.246.0
RUNNER_ADDR=254
GUEST_ADDR=$LAN.100/24
MTU=1500
POOL=migsuite
POOL_DIR=/var/lib/libvirt/images/migsuite
MONITOR_PORT=7001
HOST_MEMORY=3072
HOST_CPUS=2
# A Debian boot under TCG, then libvirt's first probe of QEMU.
BOOT_SECONDS=600
# Boots of one host when its QEMU aborts on an assertion of its own.
BOOT_ATTEMPTS=3
# The packages of a lab host; QEMU and libvirt from bookworm-backports, as
# on the runner (ci/setup.sh says why). Xen's toolstack (xl, xenstored, the
# HVM device model) and pv (counts a migration stream's bytes) serve hosts
# booted under Xen; elsewhere Xen's init script finds no Xen and does
# nothing.
HOST_PACKAGES=systemd-sysv,udev,dbus,kmod,linux-image-amd64,initramfs-tools,openssh-server,iproute2,netbase,apparmor,ca-certificates,tar,criu,busybox-static,xen-utils-4.17,xenstore-utils,qemu-system-xen,pv
# (the node-device driver lets `migsuite hosts` see the bridge).
HOST_BACKPORTS=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
                libvirt-daemon-driver-storage libvirt-daemon-driver-nodedev libvirt-clients)

me=$(basename "$0")
die() {
  echo "$me: $*" >&2
  exit 1
}
usage() {
  echo "usage: $0 image | up --migsuite BIN [--pairs kvm,xen] | exec CMD [ARG...] | down" >&2
  exit 2
}
index_of() {
  case $1 in
    a) echo 1 ;;
    b) echo 2 ;;
    c) echo 3 ;;
    d) echo 4 ;;
    *) die "no host $1" ;;
  esac
}
# The host a host migrates to: pairs [a, b] and [c, d].
other_of() {
  case $1 in
    a) echo b ;;
    b) echo a ;;
    c) echo d ;;
    d) echo c ;;
  esac
}
is_xen_host() { [[ " ${XEN_HOSTS[*]} " == *" $1 "* ]]; }
# Each NIC a fixed MAC, so the host's network files match it by address.
# A host's SMBIOS UUID, which libvirt reports as the host's: the same for
# host a (or b) of every stand-in, since baselines are bound to it and the
# recipe, not a boot, makes the machine.
host_uuid() { printf '5374616e-6469-6e00-8000-0000000000%02x' "$(index_of "$1")"; }
mac_of() { printf '52:54:00:5e:%02x:%02x' "$(index_of "$1")" "$2"; }
ns_exists() { [ -e "/run/netns/$1" ]; }
on_runner() { ip netns exec "$RUNNER" "$@"; }

# ---------------------------------------------------------------- image

# Debian 12 with the host's packages, as an ext4 image, and the kernel and
# initramfs it boots (taken out so QEMU boots them directly).
image() {
  if [ "$(cat "$IMAGE/RECIPE" 2>/dev/null)" = "$IMAGE_RECIPE" ] && [ -s "$IMAGE/host.img" ]; then
    echo "stand-in host image: $IMAGE/host.img (recipe $IMAGE_RECIPE)"
    return 0
  fi
  command -v mmdebstrap >/dev/null || apt-get install -y -qq --no-install-recommends mmdebstrap e2fsprogs >/dev/null
  local work root started
  started=$(date +%s)
  work=$(mktemp -d /var/tmp/migsuite-standin-image.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  root=$work/root
  echo "== stand-in host image: Debian 12 with libvirt and sshd (mmdebstrap)"
  mmdebstrap --quiet --mode=root --variant=apt --include="$HOST_PACKAGES" \
    --customize-hook="chroot \"\$1\" apt-get install -y -qq --no-install-recommends -t bookworm-backports ${HOST_BACKPORTS[*]} >/dev/null" \
    bookworm "$root" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-backports main"
  # What every host has before its own configuration: the root file system,
  # networkd, sshd without passwords; its identity (machine id, ssh host
  # keys) is its own, from first boot and its configuration disk.
  echo "/dev/vda / ext4 rw,relatime 0 1" >"$root/etc/fstab"
  : >"$root/etc/machine-id"
  rm -f "$root"/etc/ssh/ssh_host_*
  systemctl --root="$root" enable systemd-networkd.service ssh.service >/dev/null 2>&1
  systemctl --root="$root" disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
  # xendomains saves and restores domUs across a dom0 reboot: not here.
  systemctl --root="$root" disable xendomains >/dev/null 2>&1 || true
  # Under TCG, systemd never saw dbus-daemon's readiness on the first boot
  # (dbus.service timed out after 90 s, and logind, left on the bus it had
  # killed, made every ssh login wait 25 s for pam_systemd): dbus is taken
  # as started when it runs, its socket being open already.
  mkdir -p "$root/etc/systemd/system/dbus.service.d"
  printf '[Service]\nType=simple\n' >"$root/etc/systemd/system/dbus.service.d/migsuite-standin.conf"
  # The configuration disk: a tar archive of files laid over /, read once
  # before the network, sshd and libvirt start.
  cat >"$root/etc/systemd/system/migsuite-standin-config.service" <<'EOF'
[Unit]
Description=Files of this stand-in lab host (its configuration disk)
DefaultDependencies=no
Requires=dev-vdb.device
After=dev-vdb.device local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service libvirtd.service virtqemud.service
Wants=network-pre.target
ConditionPathExists=!/etc/migsuite/configured

[Service]
Type=oneshot
ExecStart=/bin/tar -xpf /dev/vdb -C / --no-overwrite-dir
ExecStart=/bin/touch /etc/migsuite/configured

[Install]
WantedBy=sysinit.target
EOF
  # The heartbeat agent as the README's unit, its host's arguments from the
  # configuration disk; libvirtd also on TLS (16514), its certificates from
  # there too.
  cat >"$root/etc/systemd/system/migsuite-host-agent.service" <<'EOF'
[Unit]
Description=migsuite host agent (heartbeats for migration tests)
After=systemd-networkd.service

[Service]
EnvironmentFile=/etc/migsuite/host-agent.env
ExecStart=/usr/local/bin/migsuite host-agent --name $NAME --key /etc/migsuite/heartbeat.key --listen $LISTEN --monitor $MONITOR
# Until networkd has given the address it listens on.
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
  systemctl --root="$root" enable migsuite-standin-config.service migsuite-host-agent.service libvirtd-tls.socket >/dev/null 2>&1
  rm -rf "$IMAGE.tmp" && mkdir -p "$IMAGE.tmp"
  cp "$root"/boot/vmlinuz-* "$IMAGE.tmp/vmlinuz"
  cp "$root"/boot/initrd.img-* "$IMAGE.tmp/initrd.img"
  {
    echo "kernel=$(basename "$root"/boot/vmlinuz-*)"
    chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' qemu-system-x86 libvirt-daemon openssh-server apparmor criu xen-utils-4.17
  } >"$IMAGE.tmp/VERSIONS"
  mkfs.ext4 -q -L standin -d "$root" "$IMAGE.tmp/host.img" 4G
  echo "$IMAGE_RECIPE" >"$IMAGE.tmp/RECIPE"
  rm -rf "$IMAGE" && mv "$IMAGE.tmp" "$IMAGE"
  echo "stand-in host image built in $(($(date +%s) - started)) s: $(tr '\n' ' ' <"$IMAGE/VERSIONS")"
}

# ---------------------------------------------------------------- keys

# ssh: the runner's key, and each host's host key and its own client key
# (peer-to-peer migration: the source's libvirtd opens the destination's
# URI itself, as root, over ssh). TLS: a CA, and a server and a client
# certificate per host (the source's libvirtd is the destination's client),
# and the runner's client certificate.
make_keys() {
  local h n
  mkdir -p "$STATE/runner/ssh" "$STATE/runner/pki/CA" "$STATE/runner/pki/libvirt/private" "$STATE/ca"
  ssh-keygen -q -t ed25519 -N '' -C "migsuite runner" -f "$STATE/runner/id_ed25519"
  for h in "${HOSTS[@]}"; do
    mkdir -p "$STATE/$h"
    ssh-keygen -q -t ed25519 -N '' -C "standin-$h host key" -f "$STATE/$h/ssh_host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -C "root@standin-$h" -f "$STATE/$h/id_ed25519"
  done
  : >"$STATE/runner/known_hosts"
  for h in "${HOSTS[@]}"; do
    echo "$MGMT.$(index_of "$h") $(cat "$STATE/$h/ssh_host_ed25519_key.pub")" >>"$STATE/runner/known_hosts"
  done
  openssl req -x509 -newkey ed25519 -nodes -days 30 -subj "/CN=migsuite stand-in CA" \
    -keyout "$STATE/ca/key.pem" -out "$STATE/ca/cert.pem" 2>/dev/null
  for h in "${HOSTS[@]}"; do
    n=$(index_of "$h")
    certificate "$STATE/$h/server" "standin-$h" "IP:$MGMT.$n" serverAuth
    certificate "$STATE/$h/client" "standin-$h" "IP:$MGMT.$n" clientAuth
  done
  certificate "$STATE/runner/client" "migsuite-runner" "IP:$MGMT.$RUNNER_ADDR" clientAuth
  cp "$STATE/ca/cert.pem" "$STATE/runner/pki/CA/cacert.pem"
  cp "$STATE/runner/client-cert.pem" "$STATE/runner/pki/libvirt/clientcert.pem"
  cp "$STATE/runner/client-key.pem" "$STATE/runner/pki/libvirt/private/clientkey.pem"
}

# certificate PREFIX CN SAN USAGE: PREFIX-key.pem and PREFIX-cert.pem,
# signed by the stand-in's CA.
certificate() {
  local prefix=$1 cn=$2 san=$3 usage=$4
  openssl req -newkey ed25519 -nodes -subj "/CN=$cn" -keyout "$prefix-key.pem" -out "$prefix.csr" 2>/dev/null
  openssl x509 -req -in "$prefix.csr" -CA "$STATE/ca/cert.pem" -CAkey "$STATE/ca/key.pem" -CAcreateserial \
    -days 30 -out "$prefix-cert.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=digitalSignature\n' "$san" "$usage") 2>/dev/null
  rm -f "$prefix.csr"
}

# ---------------------------------------------------------------- a host's files

# networkd's file FILE for the NIC of MAC, with LINES (its [Link] and
# [Network] sections, [Network] last) and no IPv6.
nic_network() {
  local file=$1 mac=$2
  shift 2
  printf '[Match]\nMACAddress=%s\n' "$mac" >"$file"
  printf '%s\n' "$@" "LinkLocalAddressing=no" "IPv6AcceptRA=no" >>"$file"
}

# Host $1's configuration disk: the files a lab's owner puts on a host.
host_config() {
  local h=$1 migsuite=$2 n peer dir
  n=$(index_of "$h")
  peer=$(other_of "$h")
  dir=$STATE/$h/config
  mkdir -p "$dir/etc/systemd/network" "$dir/etc/ssh/sshd_config.d" "$dir/root/.ssh" "$dir/etc/migsuite" \
    \
    "$dir/etc/pki/CA" "$dir/etc/pki/libvirt/private" "$dir/usr/local/bin" "$dir/etc/libvirt"
  # (The name is also on the kernel's command line: systemd sets it before
  # this disk is read.)
  echo "standin-$h" >"$dir/etc/hostname"
  printf '127.0.0.1 localhost\n%s.1 standin-a\n%s.2 standin-b\n%s.3 standin-c\n%s.4 standin-d\n' "$MGMT" "$MGMT" "$MGMT" "$MGMT" >"$dir/etc/hosts"

  # Network: the management address, the migration address, and br0 for
  # the guests on the guest LAN (no address: a guest reaches no daemon);
  # a Xen host's is xenbr0, the name its toolstack defaults to.
  local bridge=br0
  if is_xen_host "$h"; then bridge=xenbr0; fi
  nic_network "$dir/etc/systemd/network/10-mgmt.network" "$(mac_of "$h" 1)" \
    "[Network]" "Address=$MGMT.$n/24"
  nic_network "$dir/etc/systemd/network/10-mig.network" "$(mac_of "$h" 3)" \
    "[Link]" "MTUBytes=$MTU" "[Network]" "Address=$MIG.$n/24"
  nic_network "$dir/etc/systemd/network/10-lan.network" "$(mac_of "$h" 2)" \
    "[Link]" "MTUBytes=$MTU" "[Network]" "Bridge=$bridge"
  cat >"$dir/etc/systemd/network/20-br0.netdev" <<EOF
[NetDev]
Name=$bridge
Kind=bridge
MTUBytes=$MTU
[Bridge]
STP=no
ForwardDelaySec=0
EOF
  cat >"$dir/etc/systemd/network/20-br0.network" <<EOF
[Match]
Name=$bridge
[Network]
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
EOF

  # sshd: its own host key, keys only.
  install -m 600 "$STATE/$h/ssh_host_ed25519_key" "$dir/etc/ssh/"
  install -m 644 "$STATE/$h/ssh_host_ed25519_key.pub" "$dir/etc/ssh/"
  printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n' \
    >"$dir/etc/ssh/sshd_config.d/migsuite.conf"
  # root: the runner and the other host may log in; this host's key and
  # the other host's host key, for migrations it sends there.
  cat "$STATE/runner/id_ed25519.pub" "$STATE/$peer/id_ed25519.pub" >"$dir/root/.ssh/authorized_keys"
  install -m 600 "$STATE/$h/id_ed25519" "$dir/root/.ssh/id_ed25519"
  echo "$MGMT.$(index_of "$peer") $(cat "$STATE/$peer/ssh_host_ed25519_key.pub")" >"$dir/root/.ssh/known_hosts"
  chmod 700 "$dir/root/.ssh"

  # libvirt over TLS: the CA, this host's server certificate (libvirtd) and
  # client certificate (its libvirtd migrating to the other host).
  cp "$STATE/ca/cert.pem" "$dir/etc/pki/CA/cacert.pem"
  cp "$STATE/$h/server-cert.pem" "$dir/etc/pki/libvirt/servercert.pem"
  install -m 600 "$STATE/$h/server-key.pem" "$dir/etc/pki/libvirt/private/serverkey.pem"
  cp "$STATE/$h/client-cert.pem" "$dir/etc/pki/libvirt/clientcert.pem"
  install -m 600 "$STATE/$h/client-key.pem" "$dir/etc/pki/libvirt/private/clientkey.pem"

  # The heartbeat agent (its unit is the image's): the binary, the lab's
  # key, this host's name and addresses.
  install -m 755 "$migsuite" "$dir/usr/local/bin/migsuite"
  install -m 600 "$STATE/lab.key" "$dir/etc/migsuite/heartbeat.key"
  chmod 700 "$dir/etc/migsuite"
  printf 'NAME=%s\nLISTEN=%s\nMONITOR=%s\n' "$h" "$MGMT.$n" "$MGMT.$RUNNER_ADDR:$MONITOR_PORT" >"$dir/etc/migsuite/host-agent.env"
  tar --owner=root --group=root -C "$dir" -cf "$STATE/$h/config.tar" .
}

# ---------------------------------------------------------------- up

make_namespace() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=0
}

# The switches (bridges of msr-net), the runner's ports on mgmt and lan,
# and a tap per host NIC (QEMU attaches to it).
build_networks() {
  local h net
  make_namespace "$FABRIC"
  make_namespace "$RUNNER"
  for net in mgmt lan mig; do
    ip -n "$FABRIC" link add "$net" mtu "$MTU" type bridge
    ip -n "$FABRIC" link set "$net" type bridge stp_state 0 forward_delay 0
    ip -n "$FABRIC" link set "$net" up
  done
  for net in mgmt lan; do
    ip -n "$FABRIC" link add "run-$net" mtu "$MTU" type veth peer name "$net" mtu "$MTU" netns "$RUNNER"
    ip -n "$FABRIC" link set "run-$net" master "$net" up
    ip -n "$RUNNER" link set "$net" up
  done
  ip -n "$RUNNER" addr add "$MGMT.$RUNNER_ADDR/24" dev mgmt
  ip -n "$RUNNER" addr add "$LAN.$RUNNER_ADDR/24" dev lan
  for h in "${HOSTS[@]}"; do
    for net in mgmt lan mig; do
      ip -n "$FABRIC" tuntap add dev "$h-$net" mode tap
      ip -n "$FABRIC" link set "$h-$net" mtu "$MTU" master "$net" up
    done
  done
}

# The runner's ssh client and TLS client files, where its ssh and libvirt
# look for them: `ip netns exec` lays /etc/netns/msr-run/* over /etc.
runner_files() {
  # /etc/netns and /etc/pki go again with the stand-in where it made them.
  if [ ! -d /etc/netns ]; then
    mkdir /etc/netns
    touch "$STATE/made-etc-netns"
  fi
  mkdir -p "/etc/netns/$RUNNER/ssh"
  cat >"/etc/netns/$RUNNER/ssh/ssh_config" <<EOF
Host *
  User root
  IdentityFile $STATE/runner/id_ed25519
  UserKnownHostsFile $STATE/runner/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
  # /etc/pki must exist on this machine for the bind mount.
  if [ ! -d /etc/pki ]; then
    mkdir /etc/pki
    touch "$STATE/made-etc-pki"
  fi
  cp -a "$STATE/runner/pki" "/etc/netns/$RUNNER/pki"
}

start_host() {
  local h=$1 dir
  dir=$STATE/$h
  qemu-img create -q -f qcow2 -F raw -b "$IMAGE/host.img" "$dir/disk.qcow2"
  local cmdline="root=/dev/vda rw apparmor=1 security=apparmor systemd.hostname=standin-$h"
  local boot=(-kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" -append "$cmdline console=ttyS0")
  if is_xen_host "$h"; then
    # Xen first (multiboot), the Debian kernel and its initramfs as dom0's
    # modules; Xen's console on the serial port, dom0's through Xen's.
    boot=(-kernel "$XEN"
      -append "dom0_mem=${DOM0_MEMORY}M,max:${DOM0_MEMORY}M dom0_max_vcpus=$HOST_CPUS bootscrub=0 console=com1 com1=115200,8n1 noreboot loglvl=warning"
      -initrd "$IMAGE/vmlinuz $cmdline console=hvc0,$IMAGE/initrd.img")
  fi
  # -cpu qemu64,+svm,+npt: AMD-V under TCG (lab-notes: Xen boots HVM
  # guests with it; kvm_amd loads and offers /dev/kvm).
  setsid ip netns exec "$FABRIC" qemu-system-x86_64 -name "standin-$h" \
    -accel tcg,thread=multi -cpu qemu64,+svm,+npt -smp "$HOST_CPUS" -m "$HOST_MEMORY" \
    -uuid "$(host_uuid "$h")" \
    -nodefaults -display none -no-reboot \
    -serial "file:$dir/console.log" \
    "${boot[@]}" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$dir/config.tar,if=virtio,format=raw,readonly=on" \
    -netdev "tap,id=mgmt,ifname=$h-mgmt,script=no,downscript=no" -device "virtio-net-pci,netdev=mgmt,mac=$(mac_of "$h" 1)" \
    -netdev "tap,id=lan,ifname=$h-lan,script=no,downscript=no" -device "virtio-net-pci,netdev=lan,mac=$(mac_of "$h" 2)" \
    -netdev "tap,id=mig,ifname=$h-mig,script=no,downscript=no" -device "virtio-net-pci,netdev=mig,mac=$(mac_of "$h" 3)" \
    -pidfile "$dir/qemu.pid" \
    </dev/null >"$dir/qemu.out" 2>&1 &
}

# Waits until host $1 answers ssh from the runner machine. A QEMU that
# aborts on an assertion of its own (multi-threaded TCG has raced while an
# emulated host set up its PCI devices) crashed the emulator, not the host:
# that host boots again, at most BOOT_ATTEMPTS times, its logs kept.
wait_ssh() {
  local h=$1 deadline attempt=1
  deadline=$((SECONDS + BOOT_SECONDS))
  until on_runner timeout 20 ssh "$MGMT.$(index_of "$h")" true 2>"$STATE/$h/ssh.err"; do
    if ! { [ -s "$STATE/$h/qemu.pid" ] && kill -0 "$(cat "$STATE/$h/qemu.pid")" 2>/dev/null; }; then
      if ((attempt < BOOT_ATTEMPTS)) && grep -q "Assertion .* failed" "$STATE/$h/qemu.out"; then
        echo "host $h: its QEMU aborted ($(grep -m 1 -o "Assertion .* failed" "$STATE/$h/qemu.out")); booting it again ($((attempt + 1)) of $BOOT_ATTEMPTS)" >&2
        mv "$STATE/$h/qemu.out" "$STATE/$h/qemu.out.$attempt"
        mv "$STATE/$h/console.log" "$STATE/$h/console.log.$attempt"
        rm -f "$STATE/$h/qemu.pid"
        attempt=$((attempt + 1))
        start_host "$h"
        deadline=$((SECONDS + BOOT_SECONDS))
        sleep 2
        continue
      fi
      die "host $h's QEMU ended: $(cat "$STATE/$h/qemu.out") $(tail -n 20 "$STATE/$h/console.log")"
    fi
    ((SECONDS < deadline)) ||
      die "host $h did not answer ssh within ${BOOT_SECONDS}s ($(tail -n 1 "$STATE/$h/ssh.err")); console:"$'\n'"$(tail -n 30 "$STATE/$h/console.log")"
    sleep 2
  done
}

virsh_on() {
  local h=$1
  shift
  on_runner virsh -q -c "qemu+ssh://root@$MGMT.$(index_of "$h")/system" "$@"
}

# Host $1's pool, defined through libvirt as a lab's owner would, and
# libvirt's probe of QEMU, done now as on a host in service.
prepare_libvirt() {
  local h=$1
  virsh_on "$h" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
  virsh_on "$h" pool-build "$POOL" >/dev/null
  virsh_on "$h" pool-start "$POOL" >/dev/null
  virsh_on "$h" pool-autostart "$POOL" >/dev/null
  virsh_on "$h" domcapabilities --arch x86_64 --machine pc >/dev/null
}

# write_inventory TRANSPORT FILE HOST HOST
write_inventory() {
  local transport=$1 file=$2 h n uri name gate
  shift 2
  name=${file#lab-}
  name=${name%.yaml}
  # The stand-in's suites: Xen's rows on the Xen pair; on the KVM pair
  # KVM's and OpenVZ's, and OpenVZ's by post-copy over ssh (the libvirt
  # transport is no matter to CRIU, which the hosts run over ssh either way).
  case $name in
    xen) gate="standin-xen" ;;
    ssh) gate="standin, standin-postcopy" ;;
    *) gate="standin" ;;
  esac
  {
    cat <<EOF
# A stand-in real lab of machines (ci/standin-machines.sh): hosts a and b are
# virtual machines with their own kernel and Debian's libvirt, reached
# over $transport; c and d are Xen hosts (Debian as dom0, xl reached over
# ssh; their libvirtd keeps the lab's holds). migsuite built none of it.
name: standin-${name}
# What \`MIGSUITE_LAB=<this file> cargo test\` runs here (suites/standin*.yaml).
gate: [$gate]
storage: local
observer: $LAN.$RUNNER_ADDR
guest: $GUEST_ADDR
link_mtu: $MTU
heartbeat:
  key: $STATE/lab.key
  monitor: $MGMT.$RUNNER_ADDR
hosts:
EOF
    for h in "$@"; do
      n=$(index_of "$h")
      case $transport in
        ssh) uri="qemu+ssh://root@$MGMT.$n/system" ;;
        tls) uri="qemu+tls://$MGMT.$n/system" ;;
      esac
      local bridge=br0 backends="kvm-fv, kvm-pv, openvz"
      if is_xen_host "$h"; then bridge=xenbr0 backends="xen-pv, xen-hvm"; fi
      cat <<EOF
  - name: $h
    uri: $uri
    agent: $MGMT.$n
    migration_address: $MIG.$n
    bridge: $bridge
    pool: $POOL
    backends: [$backends]
    ssh: root@$MGMT.$n
EOF
    done
    printf 'pairs:\n  - [%s, %s]\n' "$1" "$2"
  } >"$STATE/$file"
}

up_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] || echo "$me: up failed; logs are in $STATE; run '$0 down' to remove what was built" >&2
}

up() {
  local migsuite="" pairs=kvm pair h
  while [ $# -gt 0 ]; do
    case $1 in
      --pairs)
        [ $# -ge 2 ] || usage
        pairs=$2
        shift 2
        ;;
      --migsuite)
        [ $# -ge 2 ] || usage
        migsuite=$2
        shift 2
        ;;
      *) usage ;;
    esac
  done
  [ -n "$migsuite" ] && [ -f "$migsuite" ] && [ -x "$migsuite" ] || die "--migsuite: give the migsuite binary"
  for pair in ${pairs//,/ }; do
    case $pair in
      kvm) HOSTS+=("${KVM_HOSTS[@]}") ;;
      xen) HOSTS+=("${XEN_HOSTS[@]}") ;;
      *) die "--pairs: '$pair' is no pair of the stand-in (kvm: hosts a and b; xen: c and d)" ;;
    esac
  done
  [ ${#HOSTS[@]} -gt 0 ] || die "--pairs: name kvm, xen or both"
  migsuite=$(readlink -f "$migsuite")
  [ -s "$IMAGE/host.img" ] || die "no host image in $IMAGE: run '$0 image' (ci/setup.sh does)"
  if is_xen_host "${HOSTS[-1]}"; then
    [ -s "$XEN" ] || die "no Xen hypervisor at $XEN: run ci/setup-xen.sh (ci/setup.sh does)"
  fi
  for ns in "$RUNNER" "$FABRIC"; do
    ! ns_exists "$ns" || die "namespace $ns exists: the stand-in lab is (partly) up; run '$0 down' first"
  done
  [ ! -e "$STATE" ] || die "$STATE exists: the stand-in lab is (partly) up; run '$0 down' first"
  umask 077
  trap up_failed EXIT
  mkdir -m 0700 "$STATE"
  head -c 32 /dev/urandom >"$STATE/lab.key"
  local started=$SECONDS
  echo "== keys and certificates"
  make_keys
  echo "== each host's files"
  # Readable as on any host; the secrets are installed 0600.
  for h in "${HOSTS[@]}"; do (umask 022 && host_config "$h" "$migsuite"); done
  echo "== networks"
  build_networks
  runner_files
  echo "== booting the hosts (Debian under TCG)"
  for h in "${HOSTS[@]}"; do start_host "$h"; done
  for h in "${HOSTS[@]}"; do
    wait_ssh "$h"
    echo "host $h: ssh answers after $((SECONDS - started)) s ($(on_runner ssh "$MGMT.$(index_of "$h")" uname -r))"
  done
  echo "== libvirt: pools and QEMU's capabilities"
  local pids=()
  for h in "${HOSTS[@]}"; do
    prepare_libvirt "$h" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || die "preparing libvirt failed (above)"; done
  if [[ " ${HOSTS[*]} " == *" a "* ]]; then
    write_inventory ssh lab-ssh.yaml a b
    write_inventory tls lab-tls.yaml a b
  fi
  if is_xen_host "${HOSTS[-1]}"; then write_inventory ssh lab-xen.yaml c d; fi
  echo "== stand-in lab of machines is up after $((SECONDS - started)) s"
  echo "inventories: $(cd "$STATE" && echo lab-*.yaml) in $STATE"
  local first
  first=$(cd "$STATE" && ls lab-*.yaml | head -n 1)
  echo "its gate, e.g.: MIGSUITE_LAB=$STATE/$first $0 exec cargo test"
}

# ---------------------------------------------------------------- exec, down

run_on_runner() {
  [ $# -gt 0 ] || usage
  ns_exists "$RUNNER" || die "the stand-in lab is not up"
  exec ip netns exec "$RUNNER" "$@"
}

alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

down() {
  local ns pids pid
  # Whatever runs in the namespaces: the hosts' QEMUs, a run left on the
  # runner machine.
  for ns in "$RUNNER" "$FABRIC"; do
    ns_exists "$ns" || continue
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null || true)
    [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 100); do
      local left=0
      for pid in "${pids[@]}"; do alive "$pid" && left=1; done
      [ $left -eq 0 ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || echo "$me: warning: cannot delete namespace $ns" >&2
  done
  rm -rf "/etc/netns/$RUNNER"
  for made in netns pki; do
    if [ -e "$STATE/made-etc-$made" ]; then rmdir "/etc/$made" 2>/dev/null || true; fi
  done
  rm -rf "$STATE"
  echo "stand-in lab of machines is down"
}

[ "$(id -u)" = 0 ] || die "run as root (it makes network namespaces and boots the hosts)"
[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
  image) image ;;
  up) up "$@" ;;
  exec) run_on_runner "$@" ;;
  down) down ;;
  *) usage ;;
esac
