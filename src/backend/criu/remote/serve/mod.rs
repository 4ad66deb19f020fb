//! The host's side of a CRIU session: `migsuite criu-host --session <id>`,
//! run by the runner over ssh as root. Everything the session makes is in
//! its directory (`SESSIONS_DIR/<id>`, root's, 0700) or is a process it
//! started; its input ending, or a signal, removes all of it. A session
//! whose process was killed outright is removed by the next session on
//! the host, which finds its maker gone.

mod checkpoint;
mod peer;

use super::super::binary::Criu;
use super::super::container::{self, Started};
use super::super::phases;
use super::super::post_copy;
use super::{is_plain_name, Answer, Ask, CriuOnHost, Description, Reply, Request};
use super::{ROOT, SESSIONS_DIR};
use crate::lab::owner::{Liveness, Owner};
use crate::pidfd::ProcessHandle;
use crate::procfs;
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Host commands that end on their own (a page server's start, a copy of
/// the images to the peer) take far less.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Files naming a process the session started, as `<pid> <start ticks>`.
const GUEST_RECORD: &str = "guest.pid";
const PAGE_SERVER_RECORD: &str = "page-server.pid";
const LAZY_DUMP_RECORD: &str = "lazy-dump.pid";
const LAZY_PAGES_RECORD: &str = "lazy-pages-daemon.pid";
const OWNER_RECORD: &str = "owner";
/// Images directories are named `images-<name>`.
pub(super) const IMAGES_PREFIX: &str = "images-";

/// Serves session `session` on standard input and output until the input
/// ends, then removes what it made.
pub fn serve(session: &str) -> Result<()> {
    anyhow::ensure!(
        is_plain_name(session),
        "criu-host: `{session}` is not a session name (letters, digits and dashes)"
    );
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "criu-host: runs as root (CRIU dumps and restores a container's processes); log in \
         as root"
    );
    let base = Path::new(SESSIONS_DIR);
    private_dir(base)?;
    sweep(base);
    let dir = base.join(session);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("criu-host: making {}", dir.display()))?;
    std::fs::write(dir.join(OWNER_RECORD), Owner::this()?.to_string())?;
    let host = Arc::new(Session {
        dir,
        criu: Criu::find(),
        state: Mutex::default(),
        out: Mutex::new(std::io::stdout()),
    });
    let on_signal = host.clone();
    ctrlc::set_handler(move || {
        on_signal.end();
        std::process::exit(1);
    })?;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let host = host.clone();
        std::thread::spawn(move || match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let result = host.answer(request.ask);
                host.say(&Answer {
                    id: request.id,
                    result,
                });
            }
            Err(e) => host.say(&Answer {
                id: 0,
                result: Err(format!("criu-host: cannot read request {line:?}: {e}")),
            }),
        });
    }
    host.end();
    Ok(())
}

/// `dir`, made root's and 0700 if missing; refused if anyone else could
/// write or replace it.
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!(
            "criu-host: {} must be a directory of root's that nobody else can write \
             (uid {}, mode {:o})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Removes the sessions whose maker is gone, with the container and page
/// server each one recorded.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let owner = std::fs::read_to_string(dir.join(OWNER_RECORD))
            .ok()
            .and_then(|t| Owner::parse(t.trim()));
        let gone = owner.is_none_or(|o| o.liveness().is_ok_and(|l| l == Liveness::Gone));
        if gone {
            for record in [
                GUEST_RECORD,
                PAGE_SERVER_RECORD,
                LAZY_DUMP_RECORD,
                LAZY_PAGES_RECORD,
            ] {
                if let Some(p) = recorded(&dir.join(record)) {
                    container::signal_tree(&p, Signal::SIGKILL);
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Writes `process` to `file` so that a later session can tell it again.
fn record(file: &Path, process: &ProcessHandle) {
    if let Some(s) = procfs::stat(process.pid()) {
        let _ = std::fs::write(file, format!("{} {}", process.pid(), s.start_ticks));
    }
}

/// The process `file` records, if it still runs (the same start time).
fn recorded(file: &Path) -> Option<ProcessHandle> {
    let text = std::fs::read_to_string(file).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let (pid, start): (i32, u64) = (pid.parse().ok()?, start.parse().ok()?);
    let process = ProcessHandle::open(pid).ok()?;
    (procfs::stat(pid)?.start_ticks == start).then_some(process)
}

struct Session {
    dir: PathBuf,
    criu: Result<Criu, String>,
    state: Mutex<State>,
    out: Mutex<std::io::Stdout>,
}

#[derive(Default)]
struct State {
    /// The container on this host: started here, or restored.
    guest: Option<Started>,
    page_server: Option<ProcessHandle>,
    /// Post-copy: the source's dump serving pages, with its images; the
    /// destination's lazy-pages daemon, with its images.
    lazy_dump: Option<(std::process::Child, PathBuf)>,
    lazy_pages: Option<(ProcessHandle, PathBuf)>,
    /// CPU ticks of each process seen, by (pid, start), and their sum
    /// over the session, which never goes back as processes end.
    ticks: HashMap<(i32, u64), u64>,
    cpu_ticks: u64,
    /// The peers whose kept ssh connection goes with the session.
    peers: std::collections::BTreeSet<String>,
}

impl Session {
    fn say(&self, answer: &Answer) {
        let mut out = self.out.lock().unwrap();
        // The runner is gone if it cannot be written to; the input ends next.
        let _ = serde_json::to_writer(&mut *out, answer);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn answer(&self, ask: Ask) -> Result<Reply, String> {
        let started = Instant::now();
        let done = || Reply::Done {
            ms: phases::ms(started.elapsed()),
        };
        match ask {
            Ask::Describe => Ok(Reply::Described(self.describe())),
            Ask::WriteRoot => container::write_root(&self.dir.join(ROOT))
                .map(|_| done())
                .map_err(|e| format!("writing the container's root: {e:#}")),
            Ask::Connect { peer } => self.connect(&peer).map(|_| done()),
            Ask::Send { peer, paths } => self.send(&peer, &paths).map(|_| done()),
            Ask::Start {
                bridge,
                mtu,
                agent_args,
            } => self.start(&bridge, mtu, &agent_args).map(|_| done()),
            Ask::ClearImages => self.clear_images().map(|_| done()),
            Ask::PageServer {
                images,
                prev,
                address,
                port,
            } => self
                .page_server(&images, prev.as_deref(), address, port)
                .map(|_| done()),
            Ask::Dump {
                images,
                prev,
                address,
                port,
                last,
                timeout_ms,
            } => self.dump(&images, prev.as_deref(), (address, port), last, timeout_ms),
            Ask::ServeLazily {
                images,
                address,
                port,
                timeout_ms,
            } => self.serve_lazily(&images, (address, port), timeout_ms),
            Ask::PullLazily {
                images,
                address,
                port,
            } => self.pull_lazily(&images, (address, port)).map(|_| done()),
            Ask::Restore {
                images,
                bridge,
                lazy,
                timeout_ms,
            } => self.restore(&images, &bridge, lazy, timeout_ms),
            Ask::Served { timeout_ms } => self.served(timeout_ms).map(|_| done()),
            Ask::Pulled => self.pulled(),
            Ask::Resume => {
                let mut state = self.state.lock().unwrap();
                // Its tasks stay stopped when it is killed: they resume below.
                if let Some((mut dump, _)) = state.lazy_dump.take() {
                    let _ = dump.kill();
                    let _ = dump.wait();
                }
                let guest = state.guest.as_ref().ok_or("no container here")?;
                container::signal_tree(&guest.init, Signal::SIGCONT);
                Ok(done())
            }
            Ask::Retire => {
                let guest = self.state.lock().unwrap().guest.take();
                guest.ok_or("no container here")?.kill();
                let _ = std::fs::remove_file(self.dir.join(GUEST_RECORD));
                Ok(done())
            }
            Ask::Running => {
                let state = self.state.lock().unwrap();
                let running = state
                    .guest
                    .as_ref()
                    .is_some_and(|g| container::is_running(g.init.pid()));
                Ok(Reply::Running(running))
            }
            Ask::Sample => Ok(self.sample()),
        }
    }

    fn criu(&self) -> Result<&Criu, String> {
        self.criu.as_ref().map_err(Clone::clone)
    }

    fn describe(&self) -> Description {
        let kernel = crate::sh::kernel_release();
        let criu = self.criu().cloned().map(|c| CriuOnHost {
            dirty_tracking: c.feature("mem_dirty_track"),
            lazy_pages: post_copy::unavailable(&c).map_or(Ok(()), Err),
            version: c.version,
            origin: c.origin,
        });
        Description { kernel, criu }
    }

    /// The images directory `name` of this session.
    fn images(&self, name: &str) -> Result<PathBuf, String> {
        if !is_plain_name(name) {
            return Err(format!("`{name}` is not an images name"));
        }
        Ok(self.dir.join(format!("{IMAGES_PREFIX}{name}")))
    }

    /// Images directory `name`, made, and the way to `prev`'s from it
    /// (CRIU's `--prev-images-dir`, relative so that it holds on the peer).
    fn images_after(
        &self,
        name: &str,
        prev: Option<&str>,
    ) -> Result<(PathBuf, Option<String>), String> {
        let dir = self.images(name)?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let parent = prev
            .map(|p| self.images(p))
            .transpose()?
            .map(|p| format!("../{}", p.file_name().unwrap().to_string_lossy()));
        Ok((dir, parent))
    }

    fn clear_images(&self) -> Result<(), String> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(IMAGES_PREFIX) {
                std::fs::remove_dir_all(e.path()).map_err(|err| format!("{err}"))?;
            }
        }
        Ok(())
    }

    /// The container's processes and CRIU's (every process this session
    /// started, and the page server, which left it when it daemonized).
    fn sample(&self) -> Reply {
        let mut state = self.state.lock().unwrap();
        let mut pids = container::tree(std::process::id() as i32);
        pids.retain(|&p| p != std::process::id() as i32);
        if let Some(g) = &state.guest {
            pids.extend(container::tree(g.init.pid()));
        }
        let daemons = [
            state.page_server.as_ref(),
            state.lazy_pages.as_ref().map(|(d, _)| d),
        ];
        for d in daemons.into_iter().flatten().filter(|d| d.alive()) {
            pids.push(d.pid());
        }
        pids.sort_unstable();
        pids.dedup();
        let (mut rss_pages, mut new_ticks) = (0, 0);
        for pid in pids {
            if let Some(s) = procfs::stat(pid) {
                let before = state.ticks.insert((pid, s.start_ticks), s.cpu_ticks);
                new_ticks += s.cpu_ticks.saturating_sub(before.unwrap_or(0));
                rss_pages += s.rss_pages;
            }
        }
        state.cpu_ticks += new_ticks;
        Reply::Sampled {
            cpu_ns: (state.cpu_ticks as f64 / procfs::clock_ticks() * 1e9) as u64,
            rss_kib: rss_pages * phases::page_size() / 1024,
        }
    }

    /// Everything the session made goes: the container, CRIU's processes,
    /// the directory.
    fn end(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(guest) = state.guest.take() {
            guest.kill();
        }
        if let Some(server) = state.page_server.take() {
            server.kill();
        }
        if let Some((daemon, _)) = state.lazy_pages.take() {
            daemon.kill();
        }
        if let Some((mut dump, _)) = state.lazy_dump.take() {
            let _ = dump.kill();
        }
        let peers = std::mem::take(&mut state.peers);
        drop(state);
        for peer in peers {
            let mut exit = self.ssh_to(&peer);
            exit.extend(["-O", "exit", &peer].map(String::from));
            let _ = duct::cmd("ssh", &exit)
                .stdout_null()
                .stderr_null()
                .unchecked()
                .run();
        }
        let me = std::process::id() as i32;
        for pid in container::tree(me).into_iter().filter(|&p| p != me) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `child` to end until `deadline`, then kills it (None).
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Result<Option<std::process::ExitStatus>, String> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(phases::POLL);
    }
}
