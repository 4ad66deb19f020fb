//! The workload agent: PID 1 of every migsuite guest. It brings the guest's
//! NIC up, then runs the study's "game" for ever: keeps memory dirty at a
//! configured rate (checking that every page still holds what it wrote
//! last), sends a packet stream, and a heartbeat every millisecond to the
//! observer. Its configuration comes from the kernel command line
//! (`migsuite.<key>=<value>`) in a VM, and as the same words from its
//! arguments in a container, which shares the host's kernel: no modules to
//! load, no devices to probe there.
//!
//! Built by build.rs with plain rustc, std only, statically linked.

#[path = "../wire.rs"]
mod wire;

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

fn main() {
    if let Err(e) = run() {
        eprintln!("migsuite-agent: {e}");
    }
    // PID 1 must never exit (the kernel would panic): idle so the console
    // keeps the message.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let status = Command::new("/bin/busybox").args(args).status().map_err(|e| format!("{args:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{args:?}: {status}")) }
}

fn run() -> Result<(), String> {
    eprintln!("{}", wire::AGENT_STARTED);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let in_container = !args.is_empty();
    let _ = fs::create_dir_all("/proc");
    let _ = fs::create_dir_all("/sys");
    sh(&["mount", "-t", "proc", "proc", "/proc"])?;
    sh(&["mount", "-t", "sysfs", "sys", "/sys"])?;
    if !in_container {
        let _ = fs::create_dir_all("/dev");
        let _ = sh(&["mount", "-t", "devtmpfs", "dev", "/dev"]);
    }

    let (words, source) = if in_container {
        (args.join(" "), "arguments")
    } else {
        (fs::read_to_string("/proc/cmdline").map_err(|e| e.to_string())?, "kernel command line")
    };
    let cfg: HashMap<&str, &str> = words
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("migsuite.")?.split_once('='))
        .collect();
    let get = |k: &str| cfg.get(k).copied().ok_or(format!("no migsuite.{k} in the {source}"));
    let num = |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|_| format!("migsuite.{k} is not a number")) };

    let mut load_errors = Vec::new();
    let modules = if in_container { String::new() } else { fs::read_to_string("/etc/modules.order").unwrap_or_default() };
    for module in modules.lines() {
        if let Err(e) = sh(&["insmod", module]) {
            load_errors.push(e);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new("/sys/class/net/eth0").exists() {
        if Instant::now() > deadline {
            return Err(format!("no eth0 after 20 s (module errors: {load_errors:?})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(&["ip", "link", "set", "lo", "up"])?;
    sh(&["ip", "link", "set", "eth0", "mtu", get("mtu")?, "up"])?;
    sh(&["ip", "addr", "add", get("ip")?, "dev", "eth0"])?;

    let observer: SocketAddr = get("observer")?.parse().map_err(|e| format!("migsuite.observer: {e}"))?;
    let data_to = SocketAddr::new(observer.ip(), wire::DATA_PORT);
    let (dirty_mib, dirty_rate) = (num("dirty_mib")?, num("dirty_rate")?);
    let reached = control_plane_reached(get("probe")?, observer.ip());
    let monitor: SocketAddr = get("monitor")?.parse().map_err(|e| format!("migsuite.monitor: {e}"))?;
    forge_warnings(monitor, observer.ip())?;
    let hello = wire::encode_hello(&format!(
        "guest={}\nnic={}\ndisks={}\nkernel={}\nmodule_errors={}\ndirty_capacity_mib_s={:.0}\ncontrol_plane_reached={}\n",
        if in_container { "container" } else { "vm" },
        driver_of("/sys/class/net/eth0/device"),
        // A container sees the host's block devices, not disks of its own.
        if in_container { "none".into() } else { disks() },
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        load_errors.len(),
        dirty_capacity_mib_s(dirty_mib.clamp(1, 64) as usize),
        if reached.is_empty() { "none".to_string() } else { reached.join(",") },
    ));

    let passes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    if dirty_mib > 0 && dirty_rate > 0 {
        let (p, e) = (passes.clone(), errors.clone());
        std::thread::spawn(move || dirty_memory(dirty_mib as usize, dirty_rate as usize, &p, &e));
    }
    let (pkt_size, pkt_rate) = (num("pkt_size")? as usize, num("pkt_rate")?);
    if pkt_rate > 0 {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        std::thread::spawn(move || send_stream(&sock, data_to, pkt_size, pkt_rate));
    }
    heartbeat(observer, &hello, &passes, &errors)
}

/// Tries to reach the lab's control plane (`targets`: comma-separated
/// address:port, e.g. the hosts' libvirtd) as a hostile guest would: with a
/// route to each through `via`, the one router-like address it knows. The
/// routes go again afterwards. Returns the targets that accepted.
fn control_plane_reached(targets: &str, via: IpAddr) -> Vec<String> {
    let targets: Vec<SocketAddr> = targets.split(',').filter_map(|t| t.parse().ok()).collect();
    let host = |t: &SocketAddr| format!("{}/32", t.ip());
    for t in &targets {
        let _ = sh(&["ip", "route", "add", &host(t), "via", &via.to_string()]);
    }
    let reached = targets
        .iter()
        .filter(|t| TcpStream::connect_timeout(t, Duration::from_millis(300)).is_ok())
        .map(|t| t.to_string())
        .collect();
    for t in &targets {
        let _ = sh(&["ip", "route", "del", &host(t)]);
    }
    reached
}

/// As a hostile guest would: tells the runner's failure monitor, every
/// second and through `via` (the one router-like address it knows), that a
/// host is going down. The monitor heeds only heartbeats sealed with the
/// lab's key (`crate::host_agent`); the runner reports what it ignored.
fn forge_warnings(monitor: SocketAddr, via: IpAddr) -> Result<(), String> {
    sh(&["ip", "route", "add", &format!("{}/32", monitor.ip()), "via", &via.to_string()])?;
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    std::thread::spawn(move || loop {
        let _ = sock.send_to(wire::FORGED_GOING_DOWN, monitor);
        std::thread::sleep(Duration::from_secs(1));
    });
    Ok(())
}

/// Every millisecond, on an absolute schedule so that a stall shows as a gap
/// and not as a slower rhythm; a hello every second.
fn heartbeat(to: SocketAddr, hello: &[u8], passes: &AtomicU64, errors: &AtomicU64) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let tick = Duration::from_millis(wire::HEARTBEAT_INTERVAL_MS);
    let mut next = start;
    for seq in 0u64.. {
        if seq % 1000 == 0 {
            let _ = sock.send_to(hello, to);
        }
        let hb = wire::Heartbeat {
            seq,
            agent_ns: start.elapsed().as_nanos() as u64,
            dirty_passes: passes.load(Ordering::Relaxed),
            memory_errors: errors.load(Ordering::Relaxed),
        };
        let _ = sock.send_to(&hb.encode(), to);
        next += tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // after a stall, do not burst to catch up
        }
    }
    Ok(())
}

/// How many MiB/s this guest can rewrite at most, page by page as the
/// workload does, measured over 250 ms on a buffer of its own.
fn dirty_capacity_mib_s(mib: usize) -> f64 {
    let (words, pages) = (PAGE / 8, mib * 256);
    let mut buf = vec![0u64; pages * words];
    let start = Instant::now();
    let mut written = 0usize;
    while start.elapsed() < Duration::from_millis(250) {
        for _ in 0..256 {
            let base = (written % pages) * words;
            buf[base..base + words].fill(written as u64);
            written += 1;
        }
    }
    std::hint::black_box(&buf);
    written as f64 / 256.0 / start.elapsed().as_secs_f64()
}

/// Rewrites `mib` MiB at `rate` MiB/s, page by page, in 10 ms slices. Each
/// page's first word holds the pass that last wrote it; finding anything
/// else means the memory was not carried over intact.
fn dirty_memory(mib: usize, rate: usize, passes: &AtomicU64, errors: &AtomicU64) {
    let pages = mib * 256;
    let mut buf = vec![0u64; pages * PAGE / 8];
    let per_slice = (rate * 256 / 100).max(1);
    let words_per_page = PAGE / 8;
    let mut pass = 1u64;
    let mut page = 0usize;
    loop {
        let slice_start = Instant::now();
        for _ in 0..per_slice {
            let base = page * words_per_page;
            if buf[base] != pass - 1 {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            // Touch the whole page so it is really dirty in every sense.
            for w in &mut buf[base..base + words_per_page] {
                *w = pass;
            }
            page += 1;
            if page == pages {
                page = 0;
                passes.store(pass, Ordering::Relaxed);
                pass += 1;
            }
        }
        let spent = slice_start.elapsed();
        if spent < Duration::from_millis(10) {
            std::thread::sleep(Duration::from_millis(10) - spent);
        }
    }
}

fn send_stream(sock: &UdpSocket, to: SocketAddr, size: usize, rate: u64) {
    let mut packet = vec![0u8; size.max(1)];
    let n = wire::MAGIC.len().min(packet.len());
    packet[..n].copy_from_slice(&wire::MAGIC[..n]);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    loop {
        let _ = sock.send_to(&packet, to);
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Name of the driver bound to the PCI device at or above `dev`.
fn driver_of(dev: &str) -> String {
    let mut path = match fs::canonicalize(dev) {
        Ok(p) => p,
        Err(_) => return "none".into(),
    };
    loop {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("0000:") {
            if let Ok(target) = fs::read_link(path.join("driver")) {
                return target.file_name().unwrap().to_string_lossy().into_owned();
            }
        }
        if !path.pop() {
            return "unknown".into();
        }
    }
}

fn disks() -> String {
    let mut found: Vec<String> = fs::read_dir("/sys/block")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    found.retain(|n| !n.starts_with("ram") && !n.starts_with("loop"));
    found.sort();
    found.iter().map(|n| format!("{n}:{}", driver_of(&format!("/sys/block/{n}/device")))).collect::<Vec<_>>().join(",")
}
