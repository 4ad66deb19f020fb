//! The container guest: the workload agent as PID 1 of its own PID, mount,
//! network, UTS and IPC namespaces, rooted in a small tree (agent and
//! busybox), with a veth whose outer end is on the host's bridge. A
//! simulated lab keeps the tree on its shared storage; a real host keeps it
//! in its `criu-host` session's directory.
//!
//! Its processes live outside the host's network namespace, so a simulated
//! lab's teardown cannot see them; each container is tied to a process that
//! is in the host's namespace instead: `unshare --kill-child` on the source,
//! `criu restore` on the destination (CRIU restores the parent-death
//! signal), and the container dies with it.

use crate::lab::Lab;
use crate::pidfd::ProcessHandle;
use crate::sh;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";
/// Outer end of the container's veth on each host.
pub const VETH: &str = "vz0";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Mounts the root privately, pivots into it and execs the agent as PID 1
/// of the new namespaces, its stdio on the root's console.log (a file CRIU
/// can carry along, unlike anything outside the root).
const ENTER: &str = r#"r=$0; mount --bind "$r" "$r" && cd "$r" && mkdir -p .old && pivot_root . .old &&
exec /bin/busybox sh -c 'umount -l /.old && rmdir /.old && hostname x0 &&
  exec /bin/busybox setsid /init "$@" </console.log >>/console.log 2>&1' sh "$@""#;

/// The container's root on the shared storage (both hosts see the same
/// tree, as they see a VM's disk); `<shared>/console.log` points at the
/// agent's output in it.
pub fn prepare_root(lab: &Lab) -> Result<PathBuf> {
    let root = lab.shared_dir().join("container-root");
    write_root(&root)?;
    std::os::unix::fs::symlink(
        root.join("console.log"),
        lab.shared_dir().join("console.log"),
    )?;
    Ok(root)
}

/// The container's tree at `root`: the agent as `/init`, busybox, an empty
/// console.log.
pub fn write_root(root: &Path) -> Result<()> {
    for d in ["bin", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    write_executable(&root.join("init"), crate::guest::image::AGENT)?;
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("{BUSYBOX} missing (install busybox-static)"))?;
    write_executable(&root.join("bin/busybox"), &busybox)?;
    std::fs::File::create(root.join("console.log"))?;
    Ok(())
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A container started on the source host.
pub struct Started {
    /// `unshare`, in the host's network namespace; the container dies with it.
    pub anchor: Child,
    /// The container's PID 1 (the agent), by pidfd: signals never reach a
    /// process that reused its pid.
    pub init: ProcessHandle,
}

/// Starts the container rooted at `root`, in network namespace `ns` (a
/// simulated host's) or in the host's own, its veth's outer end on `bridge`.
pub fn start(
    ns: Option<&str>,
    bridge: &str,
    root: &Path,
    mtu: u32,
    agent_args: &str,
) -> Result<Started> {
    let console = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("console.log"))?;
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "unshare"]);
            c
        }
        None => Command::new("unshare"),
    };
    command
        .args([
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--fork",
            "--kill-child",
        ])
        .args([
            "--propagation",
            "private",
            "unshare",
            "--net",
            "/bin/sh",
            "-c",
            ENTER,
        ])
        .arg(root)
        .args(agent_args.split_whitespace())
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    // Descriptors this process inherited without close-on-exec would end up
    // in the container, where CRIU could not find their files.
    unsafe {
        command.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    let mut anchor = command.spawn().context("starting the container")?;
    let init = match wait_for_init(anchor.id() as i32)
        .and_then(|pid| ProcessHandle::open(pid).context("opening a pidfd on the container's init"))
    {
        Ok(init) => init,
        Err(e) => {
            let _ = anchor.kill();
            let _ = anchor.wait();
            return Err(e);
        }
    };
    let mtu = mtu.to_string();
    let pid = init.pid().to_string();
    let ip = |args: &[&str]| match ns {
        Some(ns) => sh::run_in(ns, "ip", args),
        None => sh::run("ip", args),
    };
    let wired = ip(&[
        "link", "add", VETH, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu,
        "netns", &pid,
    ])
    .and_then(|_| ip(&["link", "set", VETH, "master", bridge, "up"]));
    let started = Started { anchor, init };
    if let Err(e) = wired {
        started.kill();
        return Err(e);
    }
    Ok(started)
}

impl Started {
    /// The container and its anchor go.
    pub fn kill(mut self) {
        signal_tree(&self.init, Signal::SIGKILL);
        let _ = self.anchor.kill();
        let _ = self.anchor.wait();
    }
}

/// The anchor's child once it runs the agent: only then is it in its own
/// network namespace, ready for its veth.
fn wait_for_init(anchor: i32) -> Result<i32> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let child = children(anchor).into_iter().next();
        if let Some(pid) = child.filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "init")
        }) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("the container's agent did not start within {START_TIMEOUT:?} (see the guest console)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// `pid` and all its descendants: a container's processes, from its init.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children(all[i]));
        i += 1;
    }
    all.retain(|p| Path::new(&format!("/proc/{p}")).exists());
    all
}

/// Signals the container: its init (only while it is the same process)
/// and, found from it at this moment, its descendants.
pub fn signal_tree(init: &ProcessHandle, signal: Signal) {
    if !init.alive() {
        return;
    }
    for pid in tree(init.pid()).into_iter().skip(1) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    init.signal(signal);
}

/// Checks the agent's hello (`key=value`) comes from a container on a host
/// running kernel `host_kernel`: the kernel is shared, so it must be the
/// host's own.
pub fn check_hello(
    hello: &std::collections::BTreeMap<String, String>,
    host_kernel: &str,
) -> Result<()> {
    let seen = |k: &str| hello.get(k).map(String::as_str).unwrap_or("none");
    anyhow::ensure!(
        seen("guest") == "container",
        "the agent says it runs in a {}, not in a container",
        seen("guest")
    );
    anyhow::ensure!(
        seen("kernel") == host_kernel,
        "the container runs kernel {}, not its host's {host_kernel}",
        seen("kernel")
    );
    Ok(())
}

/// Whether the container's init exists and is scheduled: not stopped,
/// traced (being dumped) or dead.
pub fn is_running(init: i32) -> bool {
    crate::procfs::stat(init).is_some_and(|s| !matches!(s.state, 'T' | 't' | 'Z' | 'X'))
}
