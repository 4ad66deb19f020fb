//! Nothing of a lab outlives the run: labs register here so that Ctrl-C and
//! SIGTERM tear them down, and a lab whose owner died (SIGKILL, crash) is
//! swept by the next run. Lab ids name their owner by pid and start time, so
//! a pid reused by another process does not keep a stale lab alive. What a
//! run makes on a real lab's hosts (its guest, its volumes) is registered
//! here too, as what undoes it (`on_interrupt`); a run killed outright
//! leaves it there: the next run says so of its guest and takes over its
//! holds (`hold`), and its disk stays until `migsuite volumes --remove`.

use super::{netns, root};
use crate::procfs;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

const PREFIX: &str = "migsuite-";

static LIVE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

type Undo = Box<dyn FnOnce() + Send>;

/// What undoes, at an interruption, what was made outside this machine; by
/// registration number.
static UNDO: Mutex<Vec<(u64, Undo)>> = Mutex::new(Vec::new());

/// Held while a lab's parts are created: the interrupt handler waits for it,
/// so that it never exits between creating a part and registering it.
static BUILDING: Mutex<()> = Mutex::new(());

/// `<pid>@<start time>`: this process, across pid reuse.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    let start = procfs::stat(pid as i32).map_or(0, |s| s.start_ticks);
    format!("{pid}@{start}")
}

/// A lab being built or in use: its id (`migsuite-<pid>@<start>-<n>`), its
/// private directory under the lab root, and its place on the list torn
/// down at interruption.
#[derive(Debug)]
pub struct LabDir {
    pub id: String,
    dir: tempfile::TempDir,
    _registration: Registration,
}

impl LabDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Sweeps stale labs, then creates and registers a new one. The parts
/// created under the returned guard are torn down by an interrupt too.
pub fn new_lab() -> Result<(LabDir, std::sync::MutexGuard<'static, ()>)> {
    sweep_stale();
    let building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{PREFIX}{}-{}",
        owner_tag(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("{id}-"))
        .tempdir_in(root::ensure()?)
        .context("creating the lab directory")?;
    let registration = register(&id, dir.path());
    Ok((
        LabDir {
            id,
            dir,
            _registration: registration,
        },
        building,
    ))
}

#[derive(Debug)]
struct Registration(String);

fn register(id: &str, dir: &Path) -> Registration {
    install_signal_handler();
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), dir.to_path_buf());
    Registration(id.to_string())
}

impl Drop for Registration {
    fn drop(&mut self) {
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// The processes in the namespaces of this process's live labs other than
/// `id`: on a lab of several pairs, the other pairs' cases.
pub fn other_labs_processes(id: &str) -> Vec<i32> {
    let live: Vec<String> = LIVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .filter(|other| *other != id)
        .cloned()
        .collect();
    live.iter()
        .flat_map(|other| ["a", "b", "lan"].map(|side| format!("{other}-{side}")))
        .flat_map(|ns| netns::processes(&ns))
        .collect()
}

/// Registers `undo` to run if the process is interrupted (Ctrl-C,
/// SIGTERM) while the returned guard lives: drop the guard once what it
/// undoes is undone (or made to outlive the run on purpose). Undone
/// newest first: a guest goes before the volumes under it.
#[must_use]
pub fn on_interrupt(undo: impl FnOnce() + Send + 'static) -> OnInterrupt {
    install_signal_handler();
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    UNDO.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((n, Box::new(undo)));
    OnInterrupt(n)
}

/// A registration of `on_interrupt`, withdrawn when dropped.
#[derive(Debug)]
pub struct OnInterrupt(u64);

impl Drop for OnInterrupt {
    fn drop(&mut self) {
        UNDO.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _)| *n != self.0);
    }
}

fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            eprintln!("migsuite: interrupted, tearing the lab down");
            // Never released: the process exits below.
            std::mem::forget(BUILDING.lock().unwrap_or_else(|p| p.into_inner()));
            let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
            for (id, dir) in live {
                destroy_lab(&id, &dir);
            }
            let undo = std::mem::take(&mut *UNDO.lock().unwrap_or_else(|p| p.into_inner()));
            for (_, undo) in undo.into_iter().rev() {
                undo();
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

/// Whether the owner named in a lab's `name` still runs: the pid exists and
/// started when the name says (`start_of` reads a pid's start time). Names
/// that are not a lab's are never swept.
fn is_owner_alive(name: &str, start_of: impl Fn(i32) -> Option<u64>) -> bool {
    let Some(owner) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split('-').next())
    else {
        return true;
    };
    let Some((pid, start)) = owner.split_once('@') else {
        // Named before start times were recorded: by the pid alone.
        return match owner.parse::<i32>() {
            Ok(pid) => start_of(pid).is_some(),
            Err(_) => true,
        };
    };
    match (pid.parse::<i32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_of(pid) == Some(start),
        _ => true,
    }
}

/// The lab id in a netns or directory name: the first three `-` fields.
fn lab_id(name: &str) -> String {
    name.splitn(4, '-').take(3).collect::<Vec<_>>().join("-")
}

/// Whether the process `tag` names (`owner_tag`) still runs on this machine.
pub fn owner_alive(tag: &str) -> bool {
    is_owner_alive(&format!("{PREFIX}{tag}"), |pid| {
        procfs::stat(pid).map(|s| s.start_ticks)
    })
}

/// Tears down labs whose owning process is gone.
pub fn sweep_stale() {
    let start_of = |pid: i32| procfs::stat(pid).map(|s| s.start_ticks);
    let mut stale = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !is_owner_alive(&name, start_of) {
                stale.entry(lab_id(&name)).or_insert_with(PathBuf::new);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root::LAB_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !is_owner_alive(&name, start_of) {
                stale.insert(lab_id(&name), e.path());
            }
        }
    }
    for (id, dir) in stale {
        eprintln!("migsuite: removing {id}, left by a run that was killed");
        destroy_lab(&id, &dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_does_not_keep_a_stale_lab_alive() {
        // pid 4242 runs, but it started at 900, not at 100 as the lab says.
        let start_of = |pid: i32| (pid == 4242).then_some(900);
        assert!(!is_owner_alive("migsuite-4242@100-0-a", start_of));
        assert!(is_owner_alive("migsuite-4242@900-0-a", start_of));
        assert!(!is_owner_alive("migsuite-77@100-3-lan", start_of));
        assert!(is_owner_alive("not-ours", start_of));
    }

    #[test]
    fn this_process_s_labs_are_alive_and_ids_are_unique_to_it() {
        let start_of = |pid: i32| procfs::stat(pid).map(|s| s.start_ticks);
        let name = format!("{PREFIX}{}-5-b", owner_tag());
        assert!(is_owner_alive(&name, start_of));
        assert_eq!(lab_id(&name), format!("{PREFIX}{}-5", owner_tag()));
        assert_eq!(lab_id(&format!("{name}-Xy12")), lab_id(&name));
    }
}
