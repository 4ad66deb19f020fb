//! Nothing of a lab outlives the run: labs register here so that Ctrl-C and
//! SIGTERM tear them down, and a lab whose owner died (SIGKILL, crash) is
//! swept by the next run. Lab ids carry the owner's pid for that.

use super::netns;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

pub const LAB_ROOT: &str = "/var/tmp/migsuite";
const PREFIX: &str = "migsuite-";

static LIVE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// Unique per process and per lab: `migsuite-<pid>-<n>`.
pub fn next_lab_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Keeps a lab on the list torn down at interruption while it lives.
#[derive(Debug)]
pub struct Registration(String);

pub fn register(id: &str, dir: &Path) -> Registration {
    install_signal_handler();
    LIVE.lock()
        .unwrap()
        .insert(id.to_string(), dir.to_path_buf());
    Registration(id.to_string())
}

impl Drop for Registration {
    fn drop(&mut self) {
        LIVE.lock().unwrap().remove(&self.0);
    }
}

fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            eprintln!("migsuite: interrupted, tearing the lab down");
            let live = std::mem::take(&mut *LIVE.lock().unwrap());
            for (id, dir) in live {
                destroy_lab(&id, &dir);
            }
            std::process::exit(130);
        });
    });
}

fn destroy_lab(id: &str, dir: &Path) {
    for side in ["a", "b", "lan"] {
        let name = format!("{id}-{side}");
        if Path::new("/run/netns").join(&name).exists() {
            netns::destroy(&name, Duration::from_secs(2));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Tears down labs whose owning process is gone.
pub fn sweep_stale() {
    let owner_alive = |name: &str| -> bool {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next());
        match pid.and_then(|p| p.parse::<u32>().ok()) {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            None => true, // not ours
        }
    };
    let mut stale = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !owner_alive(&name) {
                let id = name
                    .rsplit_once('-')
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default();
                stale.insert(id, PathBuf::new());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(LAB_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !owner_alive(&name) {
                let id: Vec<&str> = name.splitn(4, '-').collect();
                stale.insert(id[..3.min(id.len())].join("-"), e.path());
            }
        }
    }
    for (id, dir) in stale {
        eprintln!("migsuite: removing {id}, left by a run that was killed");
        destroy_lab(&id, &dir);
    }
}
