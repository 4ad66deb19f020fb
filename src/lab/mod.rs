//! The local two-host lab: two simulated hosts (network namespaces, one
//! libvirtd each) on a LAN whose MTU and link are the case's, reached through
//! qemu+tcp:// URIs from the runner's place on that LAN.
//!
//! Everything a lab creates is released when it is dropped, when the process
//! is interrupted (`cleanup::install_signal_handler`), and, for a run that was
//! killed outright, by the sweep at the start of the next run.

pub mod cleanup;
pub mod libvirtd;
pub mod netns;
pub mod network;

use crate::case::LinkSpec;
use anyhow::{Context, Result};
use libvirtd::Libvirtd;
use netns::Netns;
use std::path::Path;
use std::time::Duration;

const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One simulated lab host.
#[derive(Debug)]
pub struct Host {
    /// "source" or "destination".
    pub role: &'static str,
    // Declaration order is drop order: the daemon stops before its namespace goes.
    pub libvirtd: Libvirtd,
    pub netns: Netns,
}

#[derive(Debug)]
pub struct Lab {
    pub source: Host,
    pub destination: Host,
    /// The LAN's switch; the runner's sockets and libvirt clients live here.
    pub switch: Netns,
    /// Lab-private files; `shared/` is the storage both hosts see.
    dir: tempfile::TempDir,
    _registration: cleanup::Registration,
}

impl Lab {
    pub fn start(link: &LinkSpec) -> Result<Lab> {
        cleanup::sweep_stale();
        let id = cleanup::next_lab_id();
        std::fs::create_dir_all(cleanup::LAB_ROOT)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir_in(cleanup::LAB_ROOT)
            .context("creating the lab directory")?;
        let registration = cleanup::register(&id, dir.path());
        let switch = Netns::create(&format!("{id}-lan"))?;
        let ns_a = Netns::create(&format!("{id}-a"))?;
        let ns_b = Netns::create(&format!("{id}-b"))?;
        network::build(&switch, &[&ns_a, &ns_b], link)?;
        std::fs::create_dir_all(dir.path().join("shared"))?;
        let host = |role, ns: Netns, index: u8| -> Result<Host> {
            let libvirtd = Libvirtd::start(&ns, network::host_addr(index), &dir.path().join(role), DAEMON_START_TIMEOUT)?;
            Ok(Host { role, libvirtd, netns: ns })
        };
        let source = host("source", ns_a, 0)?;
        let destination = host("destination", ns_b, 1)?;
        Ok(Lab { source, destination, switch, dir, _registration: registration })
    }

    pub fn shared_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("shared")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `f` where the runner sits on the lab LAN.
    pub fn on_lan<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.switch.enter(f)
    }
}

impl Lab {
    /// Copies every log of the lab (daemons, hypervisors, CRIU, the guest's
    /// console: the `*.log` and `*.stderr` files under the lab directory) to
    /// `dest`, named by their path in the lab, so a run can be looked into
    /// after the lab is gone.
    pub fn save_logs(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let (path, kind) = (entry.path(), entry.file_type()?);
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() && path.extension().is_some_and(|e| e == "log" || e == "stderr") {
                    let name = path.strip_prefix(self.dir.path())?.to_string_lossy().replace('/', "-");
                    std::fs::copy(&path, dest.join(name))?;
                }
            }
        }
        Ok(())
    }
}
