//! The host's side of a CRIU session: `migsuite criu-host --session <id>`,
//! run by the runner over ssh as root. Everything the session makes is in
//! its directory (`SESSIONS_DIR/<id>`, root's, 0700) or is a process it
//! started; its input ending, or a signal, removes all of it. A session
//! whose process was killed outright is removed by the next session on
//! the host, which finds its maker gone.

use super::super::binary::Criu;
use super::super::container::{self, Started};
use super::super::phases::{self, Restoring};
use super::super::post_copy;
use super::super::stats::Stats;
use super::{is_plain_name, Answer, Ask, CriuOnHost, Description, Reply, Request};
use super::{ROOT, SESSIONS_DIR};
use crate::lab::owner::{Liveness, Owner};
use crate::pidfd::ProcessHandle;
use crate::procfs;
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
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

    fn connect(&self, peer: &str) -> Result<(), String> {
        check_peer(peer)?;
        let mut ssh = self.ssh_to(peer);
        ssh.extend([peer, "true"].map(String::from));
        crate::sh::run("ssh", &ssh.iter().map(String::as_str).collect::<Vec<_>>())
            .map(|_| ())
            .map_err(|e| format!("{e:#} ({PEER_KEYS})"))
    }

    /// Copies `paths` (of this session's directory) to the same place on
    /// `peer`, over ssh from this host: what the peer's root allows.
    fn send(&self, peer: &str, paths: &[String]) -> Result<(), String> {
        let inside = |p: &str| {
            !p.is_empty()
                && p.split('/').all(|c| {
                    !c.is_empty()
                        && c != ".."
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                })
        };
        if let Some(p) = paths.iter().find(|p| !inside(p)) {
            return Err(format!("`{p}` is not a path inside the session"));
        }
        check_peer(peer)?;
        let dir = self.dir.display().to_string();
        let mut tar = vec!["-C", &dir, "-c", "--"];
        tar.extend(paths.iter().map(String::as_str));
        let mut ssh = self.ssh_to(peer);
        ssh.extend([peer, "tar", "-C", &dir, "-x"].map(String::from));
        let copy = duct::cmd("tar", &tar)
            .pipe(duct::cmd("ssh", &ssh))
            .stderr_capture()
            .stdout_null()
            .unchecked();
        let handle = copy.start().map_err(|e| format!("tar | ssh: {e}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let out = loop {
            if let Some(out) = handle.try_wait().map_err(|e| e.to_string())? {
                break out.clone();
            }
            if Instant::now() > deadline {
                let _ = handle.kill();
                return Err(format!(
                    "copying {} to {peer} took over {COMMAND_TIMEOUT:?}",
                    paths.join(" ")
                ));
            }
            std::thread::sleep(phases::POLL);
        };
        if !out.status.success() {
            return Err(format!(
                "copying {} to {peer} over ssh failed ({}): {} ({PEER_KEYS})",
                paths.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// ssh's options to `peer`: one connection kept open for the session
    /// (its socket in the session's directory), so that the images sent
    /// while the container is frozen do not wait for a new login. It ends
    /// with the session, or by itself when idle if the session was killed.
    fn ssh_to(&self, peer: &str) -> Vec<String> {
        let control = self.dir.join("ssh-%h");
        self.state.lock().unwrap().peers.insert(peer.to_string());
        [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=300",
            "-o",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("ControlPath={}", control.display())])
        .collect()
    }

    fn start(&self, bridge: &str, mtu: u32, agent_args: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if state.guest.is_some() {
            return Err("a container already runs in this session".into());
        }
        let started = container::start(None, bridge, &self.dir.join(ROOT), mtu, agent_args)
            .map_err(|e| format!("starting the container: {e:#}"))?;
        record(&self.dir.join(GUEST_RECORD), &started.init);
        state.guest = Some(started);
        Ok(())
    }

    fn page_server(
        &self,
        images: &str,
        prev: Option<&str>,
        address: std::net::IpAddr,
        port: u16,
    ) -> Result<(), String> {
        let (dir, parent_arg) = self.images_after(images, prev)?;
        let pidfile = dir.join("page-server.pid");
        let (dir_arg, address, port, pidfile_arg) = (
            dir.display().to_string(),
            address.to_string(),
            port.to_string(),
            pidfile.display().to_string(),
        );
        let mut args = vec![
            "page-server",
            "--daemon",
            "--images-dir",
            &dir_arg,
            "--address",
            &address,
            "--port",
            &port,
            "--pidfile",
            &pidfile_arg,
            "--log-file",
            "page-server.log",
        ];
        if let Some(p) = &parent_arg {
            args.extend(["--prev-images-dir", p]);
        }
        // The page server daemonizes once it listens.
        self.criu()?
            .run(None, &args)
            .map_err(|e| format!("starting the page server: {e:#}"))?;
        let server = phases::read_pid(&pidfile)?;
        record(&self.dir.join(PAGE_SERVER_RECORD), &server);
        if let Some(old) = self.state.lock().unwrap().page_server.replace(server) {
            old.kill();
        }
        Ok(())
    }

    fn dump(
        &self,
        images: &str,
        prev: Option<&str>,
        (address, port): (std::net::IpAddr, u16),
        last: bool,
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        let pid = self.guest_pid()?;
        let (dir, parent_arg) = self.images_after(images, prev)?;
        let (pid, dir_arg, address, port) = (
            pid.to_string(),
            dir.display().to_string(),
            address.to_string(),
            port.to_string(),
        );
        let mut args = vec![
            if last { "dump" } else { "pre-dump" },
            "--tree",
            &pid,
            "--images-dir",
            &dir_arg,
            "--track-mem",
            "--page-server",
            "--address",
            &address,
            "--port",
            &port,
            "--display-stats",
            "--log-file",
            "dump.log",
        ];
        if let Some(p) = &parent_arg {
            args.extend(["--prev-images-dir", p]);
        }
        if last {
            // Stopped, not killed: resumed if the restore fails.
            args.push("--leave-stopped");
        }
        args.extend(network_lock(&criu.version));
        let mut dump = criu
            .command(None, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting criu: {e}"))?;
        let mut stdout = dump.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let what = args[0];
        let Some(status) = wait_until(&mut dump, started + Duration::from_millis(timeout_ms))?
        else {
            return Err(format!(
                "criu {what} did not end within {timeout_ms} ms and was killed"
            ));
        };
        let stats = Stats::parse(&reader.join().unwrap_or_default());
        if !status.success() {
            return Err(format!(
                "criu {what} failed ({status}): {}",
                phases::errors(&dir.join("dump.log"))
            ));
        }
        Ok(Reply::Criu {
            ms: phases::ms(started.elapsed()),
            stats,
        })
    }

    fn restore(
        &self,
        images: &str,
        bridge: &str,
        lazy: bool,
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        if self.state.lock().unwrap().guest.is_some() {
            return Err("a container already runs in this session".into());
        }
        let dir = self.images(images)?;
        let deadline = started + Duration::from_millis(timeout_ms);
        let mut extra = network_lock(&criu.version);
        if lazy {
            extra.push("--lazy-pages");
        }
        let (restored, stats) = phases::restore_container(
            criu,
            None,
            &Restoring {
                images: &dir,
                root: &self.dir.join(ROOT),
                bridge,
                extra: &extra,
            },
            |_| {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "criu restore did not end within {timeout_ms} ms and was killed"
                    ));
                }
                Ok(())
            },
        )?;
        record(&self.dir.join(GUEST_RECORD), &restored.init);
        self.state.lock().unwrap().guest = Some(restored);
        Ok(Reply::Criu {
            ms: phases::ms(started.elapsed()),
            stats,
        })
    }

    /// The container's init here.
    fn guest_pid(&self) -> Result<i32, String> {
        let state = self.state.lock().unwrap();
        Ok(state.guest.as_ref().ok_or("no container here")?.init.pid())
    }

    fn serve_lazily(
        &self,
        images: &str,
        (address, port): (std::net::IpAddr, u16),
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        let pid = self.guest_pid()?;
        let (dir, _) = self.images_after(images, None)?;
        let (mut dump, ready) = post_copy::spawn_lazy_dump(
            criu,
            None,
            pid,
            &dir,
            (&address.to_string(), &port.to_string()),
            &network_lock(&criu.version),
        )?;
        if let Ok(p) = ProcessHandle::open(dump.id() as i32) {
            record(&self.dir.join(LAZY_DUMP_RECORD), &p);
        }
        let deadline = started + Duration::from_millis(timeout_ms);
        let log = dir.join("dump.log");
        if let Err(why) =
            post_copy::wait_ready(ready, &mut dump, &|| Instant::now() >= deadline, timeout_ms)
        {
            let _ = dump.kill();
            let _ = dump.wait();
            return Err(format!("{why}: {}", phases::errors(&log)));
        }
        let frozen_ms = post_copy::log_offset(
            &std::fs::read_to_string(&log).unwrap_or_default(),
            "Seized task",
        )
        .map(phases::ms);
        self.state.lock().unwrap().lazy_dump = Some((dump, dir));
        Ok(Reply::Serving {
            ms: phases::ms(started.elapsed()),
            frozen_ms,
        })
    }

    fn pull_lazily(
        &self,
        images: &str,
        (address, port): (std::net::IpAddr, u16),
    ) -> Result<(), String> {
        let dir = self.images(images)?;
        let daemon = post_copy::start_lazy_pages(
            self.criu()?,
            None,
            &dir,
            (&address.to_string(), &port.to_string()),
        )?;
        record(&self.dir.join(LAZY_PAGES_RECORD), &daemon);
        if let Some((old, _)) = self.state.lock().unwrap().lazy_pages.replace((daemon, dir)) {
            old.kill();
        }
        Ok(())
    }

    /// Waits for the serving dump to end (the state's lock is not held
    /// meanwhile: samples go on); kills it at the deadline.
    fn served(&self, timeout_ms: u64) -> Result<(), String> {
        let (mut dump, dir) = self
            .state
            .lock()
            .unwrap()
            .lazy_dump
            .take()
            .ok_or("no dump serves pages here")?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let Some(status) = wait_until(&mut dump, deadline)? else {
            return Err(format!(
                "the destination had not pulled every page within {timeout_ms} ms; criu dump \
                 killed"
            ));
        };
        let _ = std::fs::remove_file(self.dir.join(LAZY_DUMP_RECORD));
        if !status.success() {
            return Err(format!(
                "criu dump failed while serving lazy pages ({status}): {}",
                phases::errors(&dir.join("dump.log"))
            ));
        }
        Ok(())
    }

    fn pulled(&self) -> Result<Reply, String> {
        let (daemon, dir) = self
            .state
            .lock()
            .unwrap()
            .lazy_pages
            .take()
            .ok_or("no lazy-pages daemon here")?;
        daemon.kill();
        let _ = std::fs::remove_file(self.dir.join(LAZY_PAGES_RECORD));
        let log = std::fs::read_to_string(dir.join("lazy-pages.log")).unwrap_or_default();
        Ok(Reply::Pulled {
            pages: post_copy::pages_read(&log),
            image_bytes: post_copy::image_bytes(&dir, "pages-"),
        })
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

/// What a failed login to the other host of the pair lacks.
const PEER_KEYS: &str =
    "the hosts must reach each other's root by ssh keys, as peer-to-peer migration does";

fn check_peer(peer: &str) -> Result<(), String> {
    if peer.is_empty() || peer.starts_with('-') || peer.contains(char::is_whitespace) {
        return Err(format!("`{peer}` is not an ssh destination"));
    }
    Ok(())
}

/// CRIU's network lock: none from 3.19 on (the container's network is its
/// own veth, which nothing else uses); before, only iptables' (the default).
fn network_lock(version: &str) -> Vec<&'static str> {
    if super::super::binary::major_minor(version) >= (3, 19) {
        vec!["--network-lock", "skip"]
    } else {
        Vec::new()
    }
}
