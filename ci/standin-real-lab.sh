#!/usr/bin/env bash
# Builds, on this one machine, a stand-in for a REAL lab: two hypervisor
# hosts (a, b) and a runner machine, each a network namespace, whose
# libvirtds, storage pools and host agents this script starts, not migsuite.
# migsuite is then pointed at the inventory it writes and must treat the
# hosts as machines it did not create (its real-lab code path).
#
#   ci/standin-real-lab.sh up --migsuite /path/to/migsuite
#   ci/standin-real-lab.sh down
#
# Layout (fixed: migsuite's real-lab tests are written against it):
#   msr-run  runner machine: bridge `mgmt` 10.248.0.254/24 (management),
#            bridge `lan` 10.247.0.254/24 (guest LAN, the observer)
#   msr-a    host a: mgmt0 10.248.0.1/24, br0 (no address) <- lan0,
#            mig0 10.246.0.1/24 (migration cable to b)
#   msr-b    host b: the same with .2
# No namespace forwards anything. All state is under /run/migsuite-standin.
set -euo pipefail

STATE=/run/migsuite-standin
RUNNER=msr-run
HOSTS=(a b)
MGMT=10.248.0      # management network: libvirtd and the host agents
LAN=10.247.0       # guest LAN
MIG=10.246.0       # migration link
RUNNER_ADDR=254
GUEST_ADDR=10.247.0.100/24
MTU=1500
POOL=migsuite
POOL_DIR=/var/lib/libvirt/images/migsuite
# The runner's failure monitor port (src/wire.rs MONITOR_PORT): the agent
# wants address:port.
MONITOR_PORT=7001
# libvirt's state directories; each host gets its own copy (as src/lab/libvirtd.rs).
STATE_DIRS=(/run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt)
WAIT_SECONDS=30
# Capabilities migsuite probed before (src/lab/libvirtd.rs keeps them here).
KEPT_CAPS=${MIGSUITE_ARTIFACTS:-/var/lib/migsuite}/libvirt-capabilities

me=$(basename "$0")

die() {
  echo "$me: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 up --migsuite /path/to/migsuite | $0 down" >&2
  exit 2
}

ns_of() { echo "msr-$1"; }

# Host a is .1, host b is .2 on every network.
index_of() {
  case $1 in
    a) echo 1 ;;
    b) echo 2 ;;
    *) die "no host $1" ;;
  esac
}

uri_of() { echo "qemu+tcp://$MGMT.$(index_of "$1")/system"; }

# virsh against host $1's daemon, from the runner machine (only it reaches
# the management network).
virsh_on() {
  local host=$1
  shift
  ip netns exec "$RUNNER" virsh -q -c "$(uri_of "$host")" "$@"
}

ns_exists() { [ -e "/run/netns/$1" ]; }

# Last lines of a host's daemon logs, for error messages.
libvirtd_logs() {
  local dir=$STATE/$1
  tail -n 8 "$dir/libvirtd.out" "$dir/var/log/libvirt/libvirtd.log" 2>/dev/null || true
}

# ---------------------------------------------------------------- up

make_namespace() {
  local ns=$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # IPv4 only, like migsuite's own lab (src/lab/netns.rs): no link-local
  # IPv6 address on br0 for a guest to reach, no IPv6 chatter on the links.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  # Nothing routes between the networks (Linux's default; said explicitly).
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
}

make_bridge() {
  local ns=$1 name=$2
  ip -n "$ns" link add "$name" mtu "$MTU" type bridge
  ip -n "$ns" link set "$name" up
}

build_networks() {
  local h ns n
  for ns in "$RUNNER" "$(ns_of a)" "$(ns_of b)"; do
    make_namespace "$ns"
  done
  make_bridge "$RUNNER" mgmt
  ip -n "$RUNNER" addr add "$MGMT.$RUNNER_ADDR/24" dev mgmt
  make_bridge "$RUNNER" lan
  ip -n "$RUNNER" addr add "$LAN.$RUNNER_ADDR/24" dev lan
  for h in "${HOSTS[@]}"; do
    ns=$(ns_of "$h")
    n=$(index_of "$h")
    # Management: runner's port mgmt-<h> <-> host's mgmt0.
    ip -n "$RUNNER" link add "mgmt-$h" mtu "$MTU" type veth peer name mgmt0 mtu "$MTU" netns "$ns"
    ip -n "$RUNNER" link set "mgmt-$h" master mgmt up
    ip -n "$ns" addr add "$MGMT.$n/24" dev mgmt0
    ip -n "$ns" link set mgmt0 up
    # Guest LAN: runner's port lan-<h> <-> host's lan0 in br0. br0 has no
    # address, so a guest on it reaches none of the host's daemons.
    make_bridge "$ns" br0
    ip -n "$RUNNER" link add "lan-$h" mtu "$MTU" type veth peer name lan0 mtu "$MTU" netns "$ns"
    ip -n "$RUNNER" link set "lan-$h" master lan up
    ip -n "$ns" link set lan0 master br0 up
  done
  # Migration link: a cable straight from a to b, default offloads.
  ip -n "$(ns_of a)" link add mig0 mtu "$MTU" type veth peer name mig0 mtu "$MTU" netns "$(ns_of b)"
  for h in "${HOSTS[@]}"; do
    ns=$(ns_of "$h")
    ip -n "$ns" addr add "$MIG.$(index_of "$h")/24" dev mig0
    ip -n "$ns" link set mig0 up
  done
}

# Starts host $1's libvirtd in its namespace and a private mount namespace
# whose libvirt directories are the host's own (as src/lab/libvirtd.rs).
start_libvirtd() {
  local h=$1 ns dir addr d binds=""
  ns=$(ns_of "$h")
  dir=$STATE/$h
  addr=$MGMT.$(index_of "$h")
  for d in "${STATE_DIRS[@]}"; do
    mkdir -p "$dir$d"
    binds+="mkdir -p '$d' && mount --bind '$dir$d' '$d' && "
  done
  cp -a /etc/libvirt/. "$dir/etc/libvirt/"
  # A default NAT network, if the network driver is installed, would turn
  # forwarding on in the host and add a second bridge: not in this lab.
  rm -rf "$dir/etc/libvirt/qemu/networks/autostart"
  # The host's images directory; the pool's own directory is made by
  # pool-build.
  mkdir -p "$dir/var/lib/libvirt/images"
  # A real host's daemon probed QEMU's capabilities long ago: seed the
  # cache with what migsuite kept, so the first migration is not slowed by
  # seconds of probing (libvirt re-probes if they no longer match).
  mkdir -p "$dir/var/cache/libvirt/qemu/capabilities"
  if [ -d "$KEPT_CAPS" ]; then
    find "$KEPT_CAPS" -maxdepth 1 -type f -exec cp {} "$dir/var/cache/libvirt/qemu/capabilities/" \;
  fi
  # Listen on the management address only, without auth (only the runner
  # reaches that network); a UUID per host, or libvirt refuses "migration to
  # the same host".
  cat >"$dir/etc/libvirt/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = "$addr"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  # Both daemons run as root on one machine: no DAC relabelling (the
  # destination would refuse files "already in use"), no LSM profile, no
  # virtlogd.
  cat >"$dir/etc/libvirt/qemu.conf" <<'EOF'
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
EOF
  # setsid: its own session, so it outlives this script. ip netns exec,
  # unshare and sh all exec, so $! is libvirtd's pid. Its own pid file,
  # since the default /run/libvirtd.pid would be shared by both daemons.
  setsid ip netns exec "$ns" unshare --mount --propagation private \
    sh -c "${binds}exec libvirtd --listen --pid-file /run/libvirt/migsuite-libvirtd.pid" \
    </dev/null >"$dir/libvirtd.out" 2>&1 &
  echo $! >"$dir/libvirtd.pid"
}

# Waits until host $1's daemon answers from the runner machine.
wait_libvirtd() {
  local h=$1 dir uri pid deadline left
  dir=$STATE/$h
  uri=$(uri_of "$h")
  pid=$(cat "$dir/libvirtd.pid")
  deadline=$((SECONDS + WAIT_SECONDS))
  while :; do
    # Each try ends by the deadline too (a first answer can take seconds).
    left=$((deadline - SECONDS))
    ((left >= 1)) || left=1
    ip netns exec "$RUNNER" timeout "$left" virsh -q -c "$uri" version >/dev/null 2>"$dir/wait.err" \
      && return 0
    kill -0 "$pid" 2>/dev/null \
      || die "libvirtd of host $h exited before answering on $uri:"$'\n'"$(libvirtd_logs "$h")"
    ((SECONDS < deadline)) \
      || die "libvirtd of host $h did not answer on $uri within ${WAIT_SECONDS}s ($(tail -n 1 "$dir/wait.err")):"$'\n'"$(libvirtd_logs "$h")"
    sleep 0.5
  done
}

# Host $1's pool: a persistent directory pool in its own /var/lib/libvirt,
# defined through libvirt as a lab's owner would.
define_pool() {
  local h=$1
  virsh_on "$h" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
  virsh_on "$h" pool-build "$POOL" >/dev/null
  virsh_on "$h" pool-start "$POOL" >/dev/null
  virsh_on "$h" pool-autostart "$POOL" >/dev/null
  # Probe QEMU now (cheap if the seeded cache was valid): a real host's
  # daemon is not probing in the middle of the first case.
  virsh_on "$h" domcapabilities --virttype qemu --arch x86_64 --machine pc >/dev/null
}

start_agent() {
  local h=$1 migsuite=$2 dir n pid
  dir=$STATE/$h
  n=$(index_of "$h")
  setsid ip netns exec "$(ns_of "$h")" "$migsuite" host-agent --name "$h" --key "$STATE/lab.key" \
    --listen "$MGMT.$n" --monitor "$MGMT.$RUNNER_ADDR:$MONITOR_PORT" \
    </dev/null >"$dir/host-agent.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/host-agent.pid"
  # It says where it listens once bound; a bad key or address ends it at once.
  for _ in $(seq 50); do
    grep -q "agent: orders on" "$dir/host-agent.log" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  die "host agent of $h did not start: $(cat "$dir/host-agent.log")"
}

write_inventory() {
  local h n
  {
    cat <<EOF
# A stand-in real lab built by ci/standin-real-lab.sh: hosts a and b are
# network namespaces of this machine (msr-a, msr-b) whose libvirtds, pools
# and host agents the script started; the runner is namespace msr-run.
# migsuite did not create any of it and must treat it as real hosts.
name: standin
# Each host has its own pool (its own /var/lib/libvirt): disks are copied.
storage: local
# The runner's address on the guest LAN.
observer: $LAN.$RUNNER_ADDR
# The address the guest takes on the guest LAN.
guest: $GUEST_ADDR
link_mtu: $MTU
heartbeat:
  key: $STATE/lab.key
  # The runner's failure monitor (the agents send to UDP port $MONITOR_PORT).
  monitor: $MGMT.$RUNNER_ADDR
hosts:
EOF
    for h in "${HOSTS[@]}"; do
      n=$(index_of "$h")
      cat <<EOF
  - name: $h
    uri: $(uri_of "$h")
    # qemu+tcp:// without authentication: only the runner reaches it.
    insecure: true
    agent: $MGMT.$n
    migration_address: $MIG.$n
    bridge: br0
    pool: $POOL
    backends: [kvm-fv, kvm-pv]
EOF
    done
    cat <<EOF
pairs:
  - [a, b]
EOF
  } >"$STATE/lab.yaml"
  chmod 0600 "$STATE/lab.yaml"
}

up_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] || echo "$me: up failed; logs are in $STATE; run '$0 down' to remove what was built" >&2
}

up() {
  local migsuite="" h ns
  while [ $# -gt 0 ]; do
    case $1 in
      --migsuite)
        [ $# -ge 2 ] || usage
        migsuite=$2
        shift 2
        ;;
      *) usage ;;
    esac
  done
  [ -n "$migsuite" ] || usage
  if [ ! -f "$migsuite" ] || [ ! -x "$migsuite" ]; then
    die "--migsuite $migsuite: not an executable file"
  fi
  migsuite=$(readlink -f "$migsuite")
  for tool in ip libvirtd virsh unshare setsid timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (run ci/setup.sh)"
  done
  for ns in "$RUNNER" "$(ns_of a)" "$(ns_of b)"; do
    ! ns_exists "$ns" || die "namespace $ns exists: the stand-in lab is (partly) up; run '$0 down' first"
  done
  [ ! -e "$STATE" ] || die "$STATE exists: the stand-in lab is (partly) up; run '$0 down' first"

  # Anything this script creates is root's alone (the key, the inventory,
  # the hosts' state).
  umask 077
  # A failed up leaves what it built, logs included, for a look and `down`.
  trap up_failed EXIT
  mkdir -m 0700 "$STATE"
  head -c 32 /dev/urandom >"$STATE/lab.key"
  chmod 0600 "$STATE/lab.key"

  echo "== networks"
  build_networks
  echo "== libvirtd on each host"
  for h in "${HOSTS[@]}"; do start_libvirtd "$h"; done
  # Started together, waited for in turn: they probe QEMU side by side.
  for h in "${HOSTS[@]}"; do
    wait_libvirtd "$h"
    echo "host $h: $(uri_of "$h") answers"
  done
  echo "== storage pools"
  for h in "${HOSTS[@]}"; do define_pool "$h"; done
  echo "== host agents"
  for h in "${HOSTS[@]}"; do start_agent "$h" "$migsuite"; done
  write_inventory

  cat <<EOF
== stand-in real lab is up
inventory: $STATE/lab.yaml
run migsuite from the runner machine, e.g. (in $PWD):
  ip netns exec $RUNNER $migsuite run --lab $STATE/lab.yaml suites/ci.yaml --filter kvm
remove it with:
  $0 down
EOF
}

# ---------------------------------------------------------------- down

# Whether process $1 still runs: a zombie has ended (this machine's init
# may take seconds to reap the daemons it inherited).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in pid file $1 if that process still runs and is the one the file
# names (its command line holds $2: a pid may have been reused).
pid_from() {
  local file=$1 what=$2 pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$what" || return 0
  echo "$pid"
}

# Processes of $@ that still run.
still_alive() {
  local pid
  for pid in "$@"; do
    if alive "$pid"; then echo "$pid"; fi
  done
}

# Ends processes $@: TERM, then KILL those left after 10 s.
end_processes() {
  local left
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    [ -n "$(still_alive "$@")" ] || return 0
    sleep 0.1
  done
  mapfile -t left < <(still_alive "$@")
  [ ${#left[@]} -eq 0 ] || kill -KILL "${left[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -n "$(still_alive "$@")" ] || return 0
    sleep 0.1
  done
  echo "$me: warning: processes still running: $(still_alive "$@" | tr '\n' ' ')" >&2
}

# Ends every process still in namespace $1 (guests' QEMUs, a run left in
# msr-run): they would keep the namespace and the private mounts alive.
kill_namespace() {
  local pids
  ns_exists "$1" || return 0
  mapfile -t pids < <(ip netns pids "$1" 2>/dev/null || true)
  end_processes "${pids[@]}"
}

down() {
  [ $# -eq 0 ] || usage
  local h ns mnt pid pids=()
  # The daemons and agents by their pid files: they may have outlived their
  # namespaces' names.
  for h in "${HOSTS[@]}"; do
    for pid in "$(pid_from "$STATE/$h/host-agent.pid" host-agent)" \
               "$(pid_from "$STATE/$h/libvirtd.pid" libvirtd)"; do
      [ -z "$pid" ] || pids+=("$pid")
    done
  done
  end_processes "${pids[@]}"
  for ns in "$(ns_of a)" "$(ns_of b)" "$RUNNER"; do
    kill_namespace "$ns"
  done
  # The bind mounts live in the daemons' private mount namespaces and end
  # with them; anything of the stand-in mounted here is undone all the same.
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v s="$STATE" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r)
  for ns in "$RUNNER" "$(ns_of a)" "$(ns_of b)"; do
    ! ns_exists "$ns" || ip netns del "$ns" 2>/dev/null || echo "$me: warning: cannot delete namespace $ns" >&2
  done
  rm -rf "$STATE"
  echo "stand-in real lab is down"
}

[ "$(id -u)" = 0 ] || die "run as root (it makes network namespaces and starts libvirtd)"
[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
  up) up "$@" ;;
  down) down "$@" ;;
  *) usage ;;
esac
