//! Running host commands (ip, tc, ethtool...) with errors that name the
//! command and carry its stderr, waiting for them, and the host's kernel.

use anyhow::{bail, Context, Result};

/// Runs `program args...`, returns its stdout; fails with the command line
/// and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("cannot start `{program}` (is it installed? run ci/setup.sh)"))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `run`, inside network namespace `ns`.
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Waits up to `timeout` for `child` to exit; true if it did.
pub fn wait_exit(child: &mut std::process::Child, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(None) => return false,
            _ => return true,
        }
    }
}

/// The running kernel's release (what `uname -r` prints).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}
