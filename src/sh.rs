//! Running host commands (ip, tc, ethtool...) with errors that name the
//! command and carry its stderr, waiting for them, and the host's kernel.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// Host commands (ip, tc, ethtool, a CRIU daemon's start) finish in
/// milliseconds; one that takes this long hangs.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `program args...`, returns its stdout; fails with the command line
/// and its stderr, or, killed, when it takes more than a minute.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_for(program, args, COMMAND_TIMEOUT)
}

fn run_for(program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let out = output_within(program, args, timeout)?;
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

/// Runs `program args...` to its end, whatever its exit status, and
/// returns what it printed; fails when it cannot start or, killed, when it
/// takes longer than `timeout`.
pub fn output_within(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<std::process::Output> {
    let handle = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .with_context(|| format!("cannot start `{program}` (is it installed? run ci/setup.sh)"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(out) = handle.try_wait()? {
            return Ok(out.clone());
        }
        if Instant::now() >= deadline {
            let _ = handle.kill();
            bail!(
                "`{program} {}` did not finish within {} ms and was killed",
                args.join(" "),
                timeout.as_millis()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// ssh's options for reaching a lab host in a batch job: fail rather than
/// ask, and notice a peer that stopped answering.
pub const SSH_OPTIONS: [&str; 9] = [
    "-T",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
];

/// An ssh client to `destination` (`[user@]host`) with `SSH_OPTIONS`; the
/// remote command is for the caller to add.
pub fn ssh(destination: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.args(SSH_OPTIONS).arg("--").arg(destination);
    c
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_command_is_killed_at_its_timeout() {
        let began = Instant::now();
        let err = run_for("sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(
            err.to_string()
                .contains("`sleep 30` did not finish within 200 ms"),
            "{err}"
        );
        assert!(began.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_and_failures() {
        assert_eq!(run("echo", &["hi"]).unwrap(), "hi\n");
        let err = run("sh", &["-c", "echo no >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed (exit status: 3): no"), "{err}");
    }
}
