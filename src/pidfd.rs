//! Handles on processes migsuite did not spawn itself (daemons known by
//! their pid files). A pid can be reused as soon as its process exits; a
//! pidfd names the one process for good, so a late signal never reaches
//! another that took its pid.

use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct ProcessHandle {
    pid: i32,
    fd: OwnedFd,
}

impl ProcessHandle {
    /// A handle on the process that has `pid` now.
    pub fn open(pid: i32) -> io::Result<ProcessHandle> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(ProcessHandle { pid, fd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` (None: only checks it could) to this process, if it
    /// still runs.
    fn send(&self, signal: Option<Signal>) -> io::Result<()> {
        let sig = signal.map_or(0, |s| s as i32);
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Sends `signal` if the process still runs; nothing otherwise.
    pub fn signal(&self, signal: Signal) {
        let _ = self.send(Some(signal));
    }

    /// Whether the process has not exited (a zombie counts as exited).
    pub fn alive(&self) -> bool {
        self.send(None).is_ok() && crate::procfs::stat(self.pid).is_some_and(|s| s.state != 'Z')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_the_process_and_nothing_after_it_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let handle = ProcessHandle::open(child.id() as i32).unwrap();
        assert!(handle.alive());
        handle.kill();
        child.wait().unwrap();
        // Reaped: the pid is free for reuse, the handle now reaches no one.
        assert!(!handle.alive());
        assert!(handle.send(Some(Signal::SIGKILL)).is_err());
    }
}
