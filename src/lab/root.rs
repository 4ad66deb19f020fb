//! The lab root: where labs keep their files, and the lock that keeps
//! measured cases from overlapping. migsuite runs as root on hosts other
//! people share, so the root sits under a root-only parent (not in a
//! world-writable directory where anyone could plant it first), and both are
//! checked before each use: real directories, not symbolic links, owned by
//! root, writable by nobody else.

use anyhow::{bail, Context, Result};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

pub const LAB_ROOT: &str = "/var/lib/migsuite/labs";

/// How long a second migsuite waits for the lab before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(60 * 60);

/// The lab root, created if missing, refused if anyone but root could
/// change what is in it.
pub fn ensure() -> Result<&'static Path> {
    let root = Path::new(LAB_ROOT);
    let parent = root.parent().expect("the lab root has a parent");
    ensure_private_dirs(parent, root)?;
    Ok(root)
}

/// `base` (mode 0755) and every directory from it down to `dir` (0700),
/// created if missing, each refused if anyone but root could change it.
pub fn ensure_private_dirs(base: &Path, dir: &Path) -> Result<()> {
    let below = dir
        .strip_prefix(base)
        .context("a private directory outside its base")?;
    let mut path = base.to_path_buf();
    let mut levels = vec![(path.clone(), 0o755)];
    for part in below {
        path.push(part);
        levels.push((path.clone(), 0o700));
    }
    for (dir, mode) in levels {
        match DirBuilder::new().mode(mode).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", dir.display()))
            }
            _ => check_private_dir(&dir, nix::unistd::geteuid().as_raw())?,
        }
    }
    Ok(())
}

/// `dir` is a directory (not a link to one), owned by `owner`, and not
/// writable by group or others.
pub fn check_private_dir(dir: &Path, owner: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    let refuse = |why: String| -> Result<()> {
        bail!(
            "{}: {why}; migsuite keeps its labs only where no other user can change them: \
             remove it (it is re-created as root's, mode 0700)",
            dir.display()
        )
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    if meta.uid() != owner {
        return refuse(format!("is owned by uid {}, not {owner}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Held while a lab's pair is in use: one measured case at a time per
/// pair, whatever the process. (The lock is released when the file is
/// closed; flock(2) locks of two opens exclude each other even in one
/// process.)
pub struct LabLock(#[allow(dead_code)] File);

/// Takes the lock of a free pair among `pairs` (indices into a lab's
/// pairs: pair 0's lock is `.lock`, pair k's `.lock-k`, whatever the lab,
/// so two labs' pair k exclude each other on one machine) whose hosts
/// `hold` also takes (a real lab's, against runners on other machines),
/// waiting (at most `LOCK_WAIT`, saying for whom) while none is free;
/// returns which pair it took, and what `hold` gave.
pub fn lock<H>(
    pairs: &[usize],
    hold: &mut dyn FnMut(usize) -> Result<Hold<H>>,
    progress: &dyn Fn(&str),
) -> Result<(usize, LabLock, H)> {
    let root = ensure()?;
    let paths: Vec<_> = pairs
        .iter()
        .map(|k| match k {
            0 => root.join(".lock"),
            k => root.join(format!(".lock-{k}")),
        })
        .collect();
    let (i, lock, held) = lock_first_free(&paths, LOCK_WAIT, &mut |i| hold(pairs[i]), progress)?;
    Ok((pairs[i], lock, held))
}

/// A pair's hosts, held; or who holds them.
pub type Hold<H> = std::result::Result<H, String>;

fn lock_first_free<H>(
    paths: &[std::path::PathBuf],
    wait: Duration,
    hold: &mut dyn FnMut(usize) -> Result<Hold<H>>,
    progress: &dyn Fn(&str),
) -> Result<(usize, LabLock, H)> {
    let mut files = paths
        .iter()
        .map(|p| open_lock(p))
        .collect::<Result<Vec<File>>>()?;
    let began = Instant::now();
    let mut told = false;
    loop {
        let mut holders = Vec::new();
        for (k, file) in files.iter_mut().enumerate() {
            match file.try_lock() {
                Ok(()) => match hold(k)? {
                    Ok(held) => {
                        let lock = claim(file)?;
                        return Ok((k, lock, held));
                    }
                    Err(elsewhere) => {
                        file.unlock()?;
                        holders.push(elsewhere);
                    }
                },
                Err(std::fs::TryLockError::WouldBlock) => holders.push(holder(file)),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", paths[k].display()))
                }
            }
        }
        let holders = holders.join("; ");
        if began.elapsed() >= wait {
            bail!(
                "the lab is still held by {holders} after {} s; stop that run, or wait and try again",
                wait.as_secs()
            );
        }
        if !told {
            progress(&format!(
                "waiting for the lab: held by {holders} (at most {} s)",
                wait.as_secs()
            ));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lock file at `path`: no O_TRUNC, and never through a symbolic link.
fn open_lock(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening the lab lock {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!(
            "{}: not a regular file of this user; remove it",
            path.display()
        );
    }
    Ok(file)
}

/// A pair's lock, just taken in `file`: says who holds it, for whoever
/// waits next.
fn claim(file: &mut File) -> Result<LabLock> {
    file.set_len(0)?;
    file.rewind()?;
    let me = std::process::id();
    let command = std::fs::read_to_string(format!("/proc/{me}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ");
    write!(file, "pid {me}: {}", command.trim())?;
    let taken = file.try_clone()?;
    Ok(LabLock(taken))
}

/// What the lock file says of its holder.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    match text.trim() {
        "" => "another process".into(),
        said => said.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// No hosts to hold (a simulated lab's).
    fn free(_: usize) -> Result<Hold<()>> {
        Ok(Ok(()))
    }

    #[test]
    fn a_private_directory_passes() {
        let dir = tempfile::tempdir().unwrap();
        check_private_dir(dir.path(), me()).unwrap();
    }

    #[test]
    fn a_planted_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = check_private_dir(&link, me()).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = check_private_dir(&file, me()).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(&open, me()).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 777)"),
            "{err}"
        );

        // Someone else's: as root, give it away; otherwise ask for root.
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let other = if me() == 0 {
            nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            me()
        } else {
            0
        };
        let err = check_private_dir(&theirs, other).unwrap_err().to_string();
        assert!(err.contains("is owned by uid"), "{err}");
    }

    #[test]
    fn the_lock_names_its_holder_and_waits_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = [dir.path().join(".lock")];
        let _held = lock_first_free(&path, Duration::ZERO, &mut free, &|_| {}).unwrap();
        let said = std::sync::Mutex::new(Vec::new());
        let err = lock_first_free(&path, Duration::from_millis(300), &mut free, &|m| {
            said.lock().unwrap().push(m.to_string())
        })
        .err()
        .unwrap()
        .to_string();
        let holder = format!("pid {}", std::process::id());
        assert!(
            err.contains(&format!("the lab is still held by {holder}")),
            "{err}"
        );
        assert!(said.lock().unwrap()[0].contains(&holder));
    }

    #[test]
    fn a_case_takes_the_first_free_pair_and_frees_it_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [dir.path().join(".lock"), dir.path().join(".lock-1")];
        let (first, held, _) = lock_first_free(&paths, Duration::ZERO, &mut free, &|_| {}).unwrap();
        let (second, _, _) = lock_first_free(&paths, Duration::ZERO, &mut free, &|_| {}).unwrap();
        assert_eq!((first, second), (0, 1));
        drop(held);
        assert_eq!(
            lock_first_free(&paths, Duration::ZERO, &mut free, &|_| {})
                .unwrap()
                .0,
            0
        );
    }

    /// A pair whose hosts another machine's runner holds is passed over,
    /// its lock file left free; the wait names who holds it.
    #[test]
    fn a_pair_held_elsewhere_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [dir.path().join(".lock"), dir.path().join(".lock-1")];
        let mut first_elsewhere = |k| {
            Ok(if k == 0 {
                Err("host a's hold".into())
            } else {
                Ok(k)
            })
        };
        let (k, _held, given) =
            lock_first_free(&paths, Duration::ZERO, &mut first_elsewhere, &|_| {}).unwrap();
        assert_eq!((k, given), (1, 1));
        let mut nowhere = |_| Ok(Err::<(), _>("host a's hold".into()));
        let err = lock_first_free(&paths[..1], Duration::ZERO, &mut nowhere, &|_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("held by host a's hold"), "{err}");
        // Its lock file was let go: this machine can take it.
        lock_first_free(&paths[..1], Duration::ZERO, &mut free, &|_| {}).unwrap();
    }

    #[test]
    fn the_lock_does_not_follow_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join(".lock");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(lock_first_free(&[path], Duration::ZERO, &mut free, &|_| {}).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
