//! One libvirtd per simulated host: run inside the host's network namespace
//! and a private mount namespace whose libvirt directories are the host's
//! own, listening on qemu+tcp:// on the management network like a real lab
//! host.
//!
//! A real host's daemon has long since probed QEMU's capabilities; a daemon
//! started seconds before a case has not, and pays seconds of probing in
//! the middle of the first migration, on both hosts. So the probed
//! capabilities are kept across labs in `<artifacts>/libvirt-capabilities`
//! (root's, 0700), copied into each new daemon's cache before it starts;
//! libvirt itself re-probes when they no longer match the installed QEMU
//! or libvirt (it records their versions and the binaries' ctimes).

use super::netns::Netns;
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LIBVIRTD_PORT: u16 = 16509;
/// Directories libvirt keeps state in; each host gets its own copy.
const STATE_DIRS: [&str; 5] = [
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
    "/etc/libvirt",
];

pub use crate::inventory::simulated::uri_at;

/// Where a simulated host's daemon sees its storage pool's directory
/// (libvirt's default images directory, bound there in the daemon's
/// private mount namespace).
pub const POOL_TARGET: &str = "/var/lib/libvirt/images";

#[derive(Debug)]
pub struct Libvirtd {
    pub addr: Ipv4Addr,
    /// Host's private root for the directories in STATE_DIRS.
    pub state: PathBuf,
    child: Child,
}

impl Libvirtd {
    /// Starts the daemon of a simulated host in `ns`, listening at `addr`,
    /// its state in `state`, its storage pool's directory `pool_dir` (seen
    /// by it at `POOL_TARGET`), QEMU's certificates for a TLS
    /// migration stream in `tls_dir` (`super::tls`).
    pub fn start(
        ns: &Netns,
        addr: Ipv4Addr,
        state: &Path,
        pool_dir: &Path,
        tls_dir: &Path,
        timeout: Duration,
    ) -> Result<Libvirtd> {
        let mut binds = String::new();
        let own_dirs = STATE_DIRS
            .iter()
            .map(|dir| (state.join(dir.trim_start_matches('/')), *dir));
        // The pool's mount point is inside /var/lib/libvirt: bound after it.
        for (own, dir) in own_dirs.chain([(pool_dir.to_path_buf(), POOL_TARGET)]) {
            fs::create_dir_all(&own)?;
            binds.push_str(&format!(
                "mkdir -p '{dir}' && mount --bind '{}' '{dir}' && ",
                own.display()
            ));
        }
        seed_capabilities(state)?;
        let etc = state.join("etc/libvirt");
        fs::write(
            etc.join("libvirtd.conf"),
            format!(
                "listen_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\nlisten_addr = \"{addr}\"\n\
                 host_uuid = \"{}\"\nlog_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
                uuid::Uuid::new_v4()
            ),
        )?;
        // Both daemons run as root on one machine: no DAC relabelling (the
        // destination would refuse files "already in use"), no LSM profile.
        fs::write(
            etc.join("qemu.conf"),
            format!(
                "stdio_handler = \"file\"\nuser = \"root\"\ngroup = \"root\"\n\
                 dynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = \"none\"\n\
                 migrate_tls_x509_cert_dir = \"{}\"\n",
                tls_dir.display()
            ),
        )?;
        let stderr = fs::File::create(state.join("libvirtd.stderr"))?;
        let script =
            format!("{binds}exec libvirtd --listen --pid-file /run/libvirt/migsuite-libvirtd.pid");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start libvirtd (run ci/setup.sh to install it)")?;
        let mut daemon = Libvirtd {
            addr,
            state: state.to_path_buf(),
            child,
        };
        daemon.wait_listening(ns, timeout)?;
        Ok(daemon)
    }

    pub fn uri(&self) -> String {
        uri_at(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pid of the QEMU process of domain `name` on this host, if running.
    pub fn qemu_pid(&self, name: &str) -> Option<i32> {
        let file = self.state.join(format!("run/libvirt/qemu/{name}.pid"));
        let pid: i32 = fs::read_to_string(file).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    fn wait_listening(&mut self, ns: &Netns, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let target = SocketAddr::from((self.addr, LIBVIRTD_PORT));
        loop {
            if ns
                .enter(|| TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())?
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "libvirtd for {} exited ({status}): {}",
                    self.addr,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "libvirtd for {} not listening after {:?}: {}",
                    self.addr,
                    timeout,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Last lines of the daemon's own logs, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for f in ["libvirtd.stderr", "var/log/libvirt/libvirtd.log"] {
            if let Ok(t) = fs::read_to_string(self.state.join(f)) {
                let lines: Vec<&str> = t.lines().collect();
                text.push_str(&lines[lines.len().saturating_sub(8)..].join("\n"));
            }
        }
        text
    }
}

const CAPABILITIES: &str = "var/cache/libvirt/qemu/capabilities";

/// Where probed QEMU capabilities are kept between labs.
fn kept_capabilities() -> PathBuf {
    crate::guest::image::artifacts_dir().join("libvirt-capabilities")
}

/// Copies the kept capabilities into a new daemon's cache.
fn seed_capabilities(state: &Path) -> Result<()> {
    let cache = state.join(CAPABILITIES);
    fs::create_dir_all(&cache)?;
    let Ok(kept) = fs::read_dir(kept_capabilities()) else {
        return Ok(());
    };
    for entry in kept.flatten() {
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), cache.join(entry.file_name()))?;
        }
    }
    Ok(())
}

impl Libvirtd {
    /// Makes the daemon probe what the guests need (QEMU's capabilities, for
    /// every emulator, as defining a domain does) now, before any case
    /// measures, and keeps what it probed for the next labs. Cheap when the
    /// cache was seeded and still valid.
    pub fn warm(&self, conn: &Connection) -> Result<()> {
        let probing = || format!("libvirtd on {}: probing QEMU's capabilities", self.addr);
        conn.capabilities().with_context(probing)?;
        conn.domain_capabilities(None, Some("x86_64"), Some("pc"), Some("qemu"), 0)
            .with_context(probing)?;
        let kept = kept_capabilities();
        let tmp = kept.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        for entry in fs::read_dir(self.state.join(CAPABILITIES))?.flatten() {
            if entry.file_type()?.is_file() {
                fs::copy(entry.path(), tmp.join(entry.file_name()))?;
            }
        }
        let _ = fs::remove_dir_all(&kept);
        fs::rename(&tmp, &kept)?;
        Ok(())
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // The namespace teardown kills whatever is left; this just reaps.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        crate::sh::wait_exit(&mut self.child, Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A version as libvirt encodes it (major * 1e6 + minor * 1e3 + release),
/// written out.
pub fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// How long a real host's daemon may take to answer a connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection to real host `host` of lab `lab`, within `timeout`; the
/// error names the host.
pub fn connect_host(
    host: &crate::inventory::Host,
    lab: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Connection> {
    use anyhow::Context;
    connect_within(&host.uri, timeout).with_context(|| format!("host {} of lab {lab}", host.name))
}

/// A connection to `uri` from this process's place, or why not within
/// `timeout` (an ssh or TLS handshake to a host that does not answer could
/// take minutes; its thread is left to libvirt's own timeout).
pub fn connect_within(uri: &str, timeout: std::time::Duration) -> anyhow::Result<Connection> {
    let (sent, opened) = std::sync::mpsc::channel();
    let target = uri.to_string();
    std::thread::spawn(move || {
        virt::error::clear_error_callback();
        let _ = sent.send(virt::connect::Connect::open(Some(&target)).map(Connection::new));
    });
    match opened.recv_timeout(timeout) {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => anyhow::bail!("connecting to {uri}: {}", e.message()),
        Err(_) => anyhow::bail!("connecting to {uri}: no answer within {timeout:?}"),
    }
}

/// A client connection to a libvirtd. virt's own `Connect` panics when it is
/// dropped and virConnectClose fails; in the Drop of a failed case that
/// would abort the whole test process, so this one says so and goes on.
pub struct Connection(std::mem::ManuallyDrop<virt::connect::Connect>);

impl Connection {
    pub fn new(conn: virt::connect::Connect) -> Connection {
        Connection(std::mem::ManuallyDrop::new(conn))
    }
}

impl std::ops::Deref for Connection {
    type Target = virt::connect::Connect;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful open and is closed
        // once, here; the Connect wrapper is never dropped itself.
        if unsafe { virt::sys::virConnectClose(self.0.as_ptr()) } < 0 {
            eprintln!("migsuite: closing a libvirt connection failed (ignored)");
        }
    }
}
