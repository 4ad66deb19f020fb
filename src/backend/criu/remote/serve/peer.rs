//! A session's line to the other host of the pair: one kept ssh
//! connection, over which the small images and the container's files go
//! host to host, never through the runner.

use super::{Session, COMMAND_TIMEOUT};
use crate::backend::criu::phases;
use std::time::Instant;

impl Session {
    pub(super) fn connect(&self, peer: &str) -> Result<(), String> {
        check_peer(peer)?;
        let mut ssh = self.ssh_to(peer);
        ssh.extend([peer, "true"].map(String::from));
        crate::sh::run("ssh", &ssh.iter().map(String::as_str).collect::<Vec<_>>())
            .map(|_| ())
            .map_err(|e| format!("{e:#} ({PEER_KEYS})"))
    }

    /// Copies `paths` (of this session's directory) to the same place on
    /// `peer`, over ssh from this host: what the peer's root allows.
    pub(super) fn send(&self, peer: &str, paths: &[String]) -> Result<(), String> {
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
    pub(super) fn ssh_to(&self, peer: &str) -> Vec<String> {
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
