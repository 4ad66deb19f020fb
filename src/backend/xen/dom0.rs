//! The nested Xen host's dom0: an initramfs with busybox, the Xen toolstack
//! that ci/setup-xen.sh unpacked, the Debian kernel's Xen and NIC modules,
//! the domU's kernel and agent initramfs, an init that starts the Xen
//! daemons, and a command server on a virtio-serial port through which the
//! runner drives `xl`.

use crate::guest::cpio::Newc;
use crate::guest::image::{artifacts_dir, cached, load_order, GuestImage};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the virtio-serial port of the command channel.
pub const CTL_PORT: &str = "org.migsuite.ctl";
/// Where the domU's kernel and initramfs sit in dom0.
pub const DOMU_KERNEL: &str = "/guest/vmlinuz";
pub const DOMU_INITRD: &str = "/guest/initrd.gz";
/// dom0's bridge, which the domUs' vifs and dom0's NIC (the uplink) join.
pub const BRIDGE: &str = "xenbr0";
/// Where the tools below keep a migration's files (logs, byte counts, pids):
/// a real dom0's session says where, in `MIGSUITE_RUN`.
pub const RUN: &str = "${MIGSUITE_RUN:-/run/migsuite}";

/// dom0's modules: Xen's device drivers and back-ends, the bridge, the NIC,
/// virtio-serial (command channel), tun (HVM device models' NICs).
const MODULES: [&str; 11] = [
    "tun",
    "xen_privcmd",
    "xenfs",
    "xen_evtchn",
    "xen_gntdev",
    "xen_gntalloc",
    "xen_netback",
    "bridge",
    "virtio_pci",
    "virtio_net",
    "virtio_console",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/usr/lib/xen-4.17/lib:/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
# bash's process substitution needs /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin; ln -sfn /proc/self/fd/1 /dev/stdout; ln -sfn /proc/self/fd/2 /dev/stderr
mount -t tmpfs run /run
ln -sfn /run /var/run
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/lib/xenstored /var/log/xen/console /tmp
echo "migsuite-dom0: loading modules"
for m in $(cat /etc/modules.order); do insmod "$m" || echo "migsuite-dom0: insmod $m failed"; done
mount -t xenfs xenfs /proc/xen || echo "migsuite-dom0: cannot mount xenfs"
echo "migsuite-dom0: starting xenstored"
xenstored --pid-file=/run/xenstored.pid
for i in $(seq 100); do xenstore-read / >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0 || echo "migsuite-dom0: xen-init-dom0 failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
# The uplink: the NIC QEMU bridges to the lab host.
for i in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link add xenbr0 type bridge
ip link set xenbr0 type bridge forward_delay 0 stp_state 0 2>/dev/null
ip link set eth0 master xenbr0 up
ip link set xenbr0 up
echo "migsuite-dom0: PCI devices: $(ls /sys/bus/pci/devices | tr '\n' ' ')"
echo "migsuite-dom0: NICs: $(ls /sys/class/net | tr '\n' ' '); virtio ports: $(ls /sys/class/virtio-ports 2>/dev/null | tr '\n' ' ')"
echo "migsuite-dom0: ready"
exec migsuite-ctl
"#;

/// The command server: reads `<id> <timeout s> <command>` lines, runs each
/// command with bash under `timeout`, answers with its output (stdout and
/// stderr) and `@@END <id> <exit status>`. One command at a time.
const CTL: &str = r#"#!/bin/bash
port=""
while [ -z "$port" ]; do
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat "$d/name" 2>/dev/null)" = "org.migsuite.ctl" ] && port=/dev/$(basename "$d")
  done
  [ -z "$port" ] && sleep 0.2
done
echo "migsuite-dom0: command channel on $port"
while true; do
  # Writing blocks until the runner is connected; reading says EOF while
  # it is not: (re)open, greet, serve.
  exec 3<>"$port"
  echo "@@READY" >&3
  while IFS= read -r -u 3 line; do
    id=${line%% *}; rest=${line#* }; secs=${rest%% *}; cmd=${rest#* }
    # Output to a file, not $(...): a background process the command
    # leaves behind must not hold the answer back.
    timeout -s KILL "$secs" bash -c "$cmd" >/run/ctl.out 2>&1 </dev/null; rc=$?
    { cat /run/ctl.out; printf '\n@@END %s %s\n' "$id" "$rc"; } >&3
  done
  exec 3>&-
  sleep 0.2
done
"#;

/// The name the nested dom0 knows its vif script by.
pub const VIF_SCRIPT_NAME: &str = "vif-migsuite";

/// Hotplug script of the domUs' vifs (and HVM taps): joins the device to xenbr0 with the
/// bridge's MTU, and tells libxl it is connected.
const VIF_SCRIPT: &str = r#"#!/bin/bash
dev=vif${XENBUS_PATH#backend/vif/}; dev=${dev/\//.}
# HVM: libxl calls it again for the device model's tap ("type_if=tap").
[ "$2" = "type_if=tap" ] && dev=$dev-emu
case "$1" in
  online|add)
    mtu=$(cat /sys/class/net/xenbr0/mtu)
    ip link set dev "$dev" mtu "$mtu" 2>/dev/null
    ip link set dev "$dev" master xenbr0 up
    [ "$2" = "type_if=tap" ] || xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
  offline|remove)
    ip link set dev "$dev" nomaster 2>/dev/null; true ;;
esac
"#;

/// The stream receiver, run by `xl migrate` (one host) or by
/// migsuite-listen's relay (two hosts): counts the
/// bytes of the migration stream (pv), stamps xl's log lines with
/// dom0's clock, and records xl's pid so that a timeout or a fault can kill
/// it, which is killing the destination.
const RECV: &str = r#"#!/bin/bash
d=${MIGSUITE_RUN:-/run/migsuite}
stamp() { while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
echo $$ > $d/recv.pid
# Nothing of the receiver (xl migrate-receive stays in the background to
# watch the domain) may keep the sender's stderr pipe open.
exec 2>>$d/recv.err 4<&0
# dd and pv: unbuffered relays (a buffering one deadlocks the handshake at
# the end of the stream) with large reads (a syscall costs a nested dom0
# dearly: 1 KiB reads held a socket to 1.5 MiB/s, 1 MiB ones carried 60);
# pv prints the byte count every second and at the end.
# The stamping subshell drops the receiver's standard output at once (exec,
# not a saved copy): the xl left watching the domain keeps its stderr open.
dd bs=1M <&4 2>/dev/null | pv -f -n -b -B 1m -i 1 2>$d/recv.bytes | xl -vvv migrate-receive 2> >(exec >$d/recv.log; stamp) &
wait $!
"#;

/// The destination's side of a migration from another Xen host: one
/// connection on port `$1`, the socket handed to migsuite-recv (or to the
/// receiver `$2`). Returns once the port listens.
const LISTEN: &str = r#"#!/bin/bash
d=${MIGSUITE_RUN:-/run/migsuite}; rm -rf $d; mkdir -p $d
setsid nc -l -p "$1" -e "$(command -v "${2:-migsuite-recv}")" </dev/null >/dev/null 2>$d/listen.err &
echo $! > $d/listen.pid
# nc listens on a dual-stack socket: tcp6.
port=$(printf ':%04X ' "$1")
for i in $(seq 50); do grep -qs "$port" /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.1; done
echo "nothing listens on port $1: $(cat $d/listen.err)"; exit 1
"#;

/// What `xl migrate` runs on the source to reach another Xen host's
/// migsuite-listen or migsuite-listen-peer (`$1` address, `$2` port);
/// killing it cuts the stream. dd relays both ways in large reads (see
/// migsuite-recv; nc's 1 KiB ones are far too slow here). A real dom0's
/// stream opens with the migration's token. Once xl closes its side, the
/// reader of the way back goes too: it holds the socket open, and the
/// destination's relay waits for the end of the stream, so each would
/// otherwise wait for the other for good.
const SEND_TO: &str = r#"#!/bin/bash
echo $$ > "${MIGSUITE_RUN:-/run/migsuite}/recv.pid"
exec 3<>"/dev/tcp/$1/$2" || exit 1
[ -n "${MIGSUITE_TOKEN:-}" ] && { cat "$MIGSUITE_TOKEN" >&3 || exit 1; }
dd bs=64k <&3 2>/dev/null &
back=$!
dd bs=1M >&3 2>/dev/null
kill $back 2>/dev/null
"#;

/// The destination's side of a migration from another real dom0 (`$1`
/// address, `$2` port): one connection from the other dom0's migration
/// address (`$3`) that opens with the migration's token (a line the runner
/// wrote to both dom0s over ssh, used once); anything else is dropped. The
/// socket becomes the input and output of migsuite-recv (or of the
/// receiver `$4`). Returns once it listens. Python: Xen's toolstack has it.
const LISTEN_PEER: &str = r#"#!/usr/bin/python3
import hmac, os, shutil, socket, sys
address, port, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
receiver = sys.argv[4] if len(sys.argv) > 4 else "migsuite-recv"
run = os.environ.get("MIGSUITE_RUN", "/run/migsuite")
token = open(os.environ["MIGSUITE_TOKEN"], "rb").read().strip()
shutil.rmtree(run, ignore_errors=True)
os.makedirs(run)
family = socket.AF_INET6 if ":" in address else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    listener.bind((address, port))
    listener.listen(8)
except OSError as e:
    sys.exit(f"cannot listen on {address} port {port}: {e}")
child = os.fork()
if child:
    with open(os.path.join(run, "listen.pid"), "w") as f:
        f.write(f"{child}\n")
    sys.exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
errors = os.open(os.path.join(run, "listen.err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(null, 0)
os.dup2(null, 1)
os.dup2(errors, 2)
while True:
    conn, source = listener.accept()
    conn.settimeout(10)
    said = b""
    try:
        while not said.endswith(b"\n") and len(said) <= len(token):
            byte = conn.recv(1)
            if not byte:
                break
            said += byte
    except OSError:
        pass
    if source[0] == peer and hmac.compare_digest(said.strip(), token):
        break
    print(f"dropped a connection from {source[0]}", file=sys.stderr, flush=True)
    conn.close()
listener.close()
conn.settimeout(None)
os.dup2(conn.fileno(), 0)
os.dup2(conn.fileno(), 1)
conn.close()
os.execvp(receiver, [receiver])
"#;

/// The stream's path without xl, to calibrate it: migsuite-recv's relay
/// into nothing, timed on dom0's clock. Writes start, end and bytes to
/// /run/migsuite/sink.out when the sender closes.
const SINK: &str = r#"#!/bin/bash
d=${MIGSUITE_RUN:-/run/migsuite}
start=$EPOCHREALTIME
dd bs=1M 2>/dev/null | pv -f -n -b -B 1m -i 1 2>$d/sink.bytes >/dev/null
printf 'start=%s\nend=%s\nbytes=%s\n' "$start" "$EPOCHREALTIME" "$(tail -n 1 $d/sink.bytes)" > $d/sink.tmp
mv $d/sink.tmp $d/sink.out
"#;

/// Sends `$3` MiB of zeros, for `$4` s at most, to another Xen host's
/// migsuite-listen or migsuite-listen-peer (`$1` address, `$2` port)
/// through a pipe and migsuite-send-to's relay, as `xl migrate` sends a
/// stream: the sending half of the calibration. (Not migsuite-send-to
/// itself: its reader of the way back would hold the socket open after the
/// last byte.)
const SEND_ZEROS: &str = r#"#!/bin/bash
exec 3<>"/dev/tcp/$1/$2" || exit 1
[ -n "${MIGSUITE_TOKEN:-}" ] && { cat "$MIGSUITE_TOKEN" >&3 || exit 1; }
timeout -s INT "$4" dd if=/dev/zero bs=1M count="$3" 2>/dev/null | dd bs=1M >&3 2>/dev/null
"#;

/// Kills the receiving end of this dom0's migration (migsuite-listen's
/// nc, migsuite-listen-peer, migsuite-recv or migsuite-send-to) and
/// everything it started.
const KILL_RECEIVER: &str = r#"#!/bin/bash
killtree() {
  local s pid comm state ppid rest
  for s in /proc/[0-9]*/stat; do
    read -r pid comm state ppid rest < "$s" 2>/dev/null || continue
    [ "$ppid" = "$1" ] && killtree "$pid"
  done
  kill -9 "$1" 2>/dev/null
}
d=${MIGSUITE_RUN:-/run/migsuite}
for f in $d/listen.pid $d/recv.pid; do
  [ -s $f ] && killtree "$(cat $f)"
done
exit 0
"#;

/// Runs one migration of x0, foreground, to this host (no `$3`) or
/// through the receiver command `$3` (migsuite-send-to ...); kills the
/// receiver at `$1` s (timeout) or at `$2` ms (fault; "-" for none).
/// Prints key=value lines: xl's exit status, elapsed time, stream bytes.
const MIGRATE: &str = r#"#!/bin/bash
timeout_s=$1; kill_ms=$2; receiver=${3:-migsuite-recv}
d=${MIGSUITE_RUN:-/run/migsuite}; rm -rf $d; mkdir -p $d
stamp() { while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
killrecv() { echo "$1" > $d/$1; migsuite-kill-receiver; }
if [ "$kill_ms" != "-" ]; then
  ( sleep "$(awk "BEGIN{print $kill_ms/1000}")"; killrecv fault ) >/dev/null 2>&1 &
  fault=$!
fi
( sleep "$timeout_s"; killrecv timedout ) >/dev/null 2>&1 &
watchdog=$!
start=$EPOCHREALTIME
xl -vvv migrate -s "" x0 "$receiver" 2>&1 </dev/null | stamp > $d/send.log
rc=${PIPESTATUS[0]}
end=$EPOCHREALTIME
kill $watchdog ${fault:-} 2>/dev/null
[ "$rc" = 0 ] && [ -z "$3" ] && for i in $(seq 50); do [ -s $d/recv.bytes ] && break; sleep 0.1; done
echo "rc=$rc"
echo "start=$start"
echo "end=$end"
[ -e $d/timedout ] && echo "timedout=1"
[ -e $d/fault ] && echo "fault=1"
[ -z "$3" ] && echo "bytes=$(tail -n 1 $d/recv.bytes 2>/dev/null)"
exit 0
"#;

/// The tools a dom0 runs for migsuite (file name, bash script): in the
/// nested host's /usr/local/sbin, in a real dom0's session directory.
pub const TOOLS: [(&str, &str); 8] = [
    ("migsuite-recv", RECV),
    ("migsuite-migrate", MIGRATE),
    ("migsuite-listen", LISTEN),
    ("migsuite-send-to", SEND_TO),
    ("migsuite-listen-peer", LISTEN_PEER),
    ("migsuite-sink", SINK),
    ("migsuite-send-zeros", SEND_ZEROS),
    ("migsuite-kill-receiver", KILL_RECEIVER),
];

/// The dom0 initramfs for `guest` and this build, made once and cached
/// under the artifacts' cache.
pub fn initramfs(guest: &GuestImage) -> Result<PathBuf> {
    let xen = artifacts_dir().join("xen");
    let root = xen.join("dom0");
    anyhow::ensure!(
        root.is_dir(),
        "no Xen dom0 userland in {} (run ci/setup-xen.sh)",
        root.display()
    );
    let kdir = artifacts_dir().join("kernel");
    let modules_dir = kdir.join("lib/modules").join(&guest.kernel_release);
    let modules = load_order(&modules_dir, &MODULES)?;
    let busybox =
        fs::read("/bin/busybox").context("/bin/busybox missing (install busybox-static)")?;

    let mut hash = Sha256::new();
    for part in [INIT, CTL, VIF_SCRIPT]
        .into_iter()
        .chain(TOOLS.iter().map(|(_, text)| *text))
    {
        hash.update(part.as_bytes());
    }
    hash.update(MODULES.join(",").as_bytes());
    // ci/setup-xen.sh rewrites VERSION whenever it remakes the userland.
    hash.update(fs::read(xen.join("VERSION")).unwrap_or_default());
    let stamp = fs::metadata(xen.join("VERSION"))
        .and_then(|m| m.modified())
        .ok();
    hash.update(format!("{stamp:?}").as_bytes());
    hash.update(fs::read(&guest.initrd)?);
    hash.update(guest.kernel_release.as_bytes());
    hash.update(&busybox);
    let out = cached("xen-dom0", hash);
    if out.exists() {
        return Ok(out);
    }
    fs::create_dir_all(out.parent().unwrap())?;
    let tmp = crate::guest::image::temp_beside(&out);
    let gz = flate2::write::GzEncoder::new(fs::File::create(&tmp)?, flate2::Compression::fast());
    let mut cpio = Newc::new(gz);
    for d in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "run",
        "tmp",
        "var",
        "usr",
        "usr/local",
        "usr/local/sbin",
        "lib",
        "lib/modules",
        "guest",
        "etc/xen",
        "etc/xen/scripts",
    ] {
        cpio.dir(d)?;
    }
    cpio.char_device("dev/console", 5, 1)?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    cpio.file("init", 0o755, INIT.as_bytes())?;
    cpio.file("usr/local/sbin/migsuite-ctl", 0o755, CTL.as_bytes())?;
    for (name, text) in TOOLS {
        cpio.file(&format!("usr/local/sbin/{name}"), 0o755, text.as_bytes())?;
    }
    add_tree(&mut cpio, &root, Path::new(""))?;
    // After the tree: ours wins over the package's files of the same name.
    cpio.file(
        &format!("etc/xen/scripts/{VIF_SCRIPT_NAME}"),
        0o755,
        VIF_SCRIPT.as_bytes(),
    )?;
    let mut order = String::new();
    for m in &modules {
        let name = m.rsplit('/').next().unwrap();
        cpio.file(
            &format!("lib/modules/{name}"),
            0o644,
            &fs::read(modules_dir.join(m))?,
        )?;
        order.push_str(&format!("/lib/modules/{name}\n"));
    }
    cpio.file("etc/modules.order", 0o644, order.as_bytes())?;
    cpio.file(
        DOMU_KERNEL.trim_start_matches('/'),
        0o644,
        &fs::read(&guest.kernel)?,
    )?;
    cpio.file(
        DOMU_INITRD.trim_start_matches('/'),
        0o644,
        &fs::read(&guest.initrd)?,
    )?;
    cpio.finish()?.finish()?.flush()?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Adds the files, symlinks and directories under `base/rel` (directories
/// first, so the kernel can create what is inside them).
fn add_tree<W: Write>(cpio: &mut Newc<W>, base: &Path, rel: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = fs::read_dir(base.join(rel))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let name = r.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(e.path())?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(e.path())?;
            cpio.symlink(&name, &target.to_string_lossy())?;
        } else if meta.is_dir() {
            cpio.dir(&name)?;
            add_tree(cpio, base, &r)?;
        } else if meta.is_file() {
            cpio.file(
                &name,
                meta.permissions().mode() & 0o7777,
                &fs::read(e.path())?,
            )?;
        }
    }
    Ok(())
}
