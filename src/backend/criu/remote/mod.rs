//! CRIU on the hosts of a real lab. The runner reaches each host over ssh
//! (authenticated, encrypted, what a lab's owner already allows) and runs
//! `migsuite criu-host` there: a session that takes requests as JSON lines
//! on its input and answers each on its output, several at once (the
//! sampler asks while a dump runs). The container, CRIU's dumps, page
//! servers and restores, and the images stay on the hosts: pages go from
//! the source's dump to the destination's page server over the migration
//! network, the small images host to host over ssh, never through the
//! runner. When the session's input ends (the runner ended, or was killed
//! and its ssh went with it) the host removes everything the session made.
//!
//! This module is what requests and answers say; `serve` is the host's
//! side, `session` the runner's.

mod evacuating;
pub mod hosts;
mod post_copy;
pub mod serve;
pub mod session;

use super::stats::Stats;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where a host keeps its sessions' files: root's, 0700.
pub const SESSIONS_DIR: &str = "/var/lib/migsuite/criu-host";

/// The container's root in a session's directory; the same path on both
/// hosts, as CRIU restores the root it dumped.
pub const ROOT: &str = "root";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub ask: Ask,
}

/// What the runner asks of a host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Ask {
    /// The host's kernel and CRIU, and what that CRIU can do there.
    Describe,
    /// Logs in to `peer` (an ssh destination, `root@address`) and keeps
    /// the connection for the session's copies to it.
    Connect { peer: String },
    /// Writes the container's root (the agent as its init, busybox).
    WriteRoot,
    /// Copies `paths` of the session's directory to the same place on
    /// `peer` (an ssh destination, `root@address`), host to host.
    Send { peer: String, paths: Vec<String> },
    /// Starts the container from the root, its veth on `bridge`.
    Start {
        bridge: String,
        mtu: u32,
        agent_args: String,
    },
    /// Removes every images directory of the session.
    ClearImages,
    /// A page server writing into `images` (after `prev`, a pre-dump's),
    /// listening at `address:port` until one dump has sent its pages.
    PageServer {
        images: String,
        prev: Option<String>,
        address: IpAddr,
        port: u16,
    },
    /// Dumps the container into `images`, its pages to the page server at
    /// `address:port`: a pre-dump while it runs on, or the last dump,
    /// which leaves it stopped.
    Dump {
        images: String,
        prev: Option<String>,
        address: IpAddr,
        port: u16,
        last: bool,
        timeout_ms: u64,
    },
    /// Post-copy on the source: dumps the container into `images` but keeps
    /// its memory, served from `address:port` (this host's migration
    /// address) until the destination has pulled it all; answers once the
    /// images are written and the pages are served. The container stays
    /// stopped.
    ServeLazily {
        images: String,
        address: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    /// Post-copy on the destination: a lazy-pages daemon for the container
    /// to be restored from `images`, pulling its pages from the source's
    /// `address:port`.
    PullLazily {
        images: String,
        address: IpAddr,
        port: u16,
    },
    /// Restores the container from `images`, its veth on `bridge` (with
    /// `lazy`, its memory pulled by the lazy-pages daemon as it runs);
    /// answers once the restored tasks run.
    Restore {
        images: String,
        bridge: String,
        lazy: bool,
        timeout_ms: u64,
    },
    /// Post-copy on the source: waits until the destination has pulled
    /// the last page and the dump has ended.
    Served { timeout_ms: u64 },
    /// Post-copy on the destination: the lazy-pages daemon goes; answers
    /// with what it pulled.
    Pulled,
    /// The stopped container runs again (a failed evacuation); a dump still
    /// serving its pages is killed first.
    Resume,
    /// The container and its anchor go (it runs elsewhere now).
    Retire,
    /// Whether the container runs here, not stopped.
    Running,
    /// The CPU time and memory of the container and of CRIU here.
    Sample,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub result: Result<Reply, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Described(Description),
    /// Done, having taken `ms` on the host.
    Done {
        ms: f64,
    },
    /// A dump or restore done, with CRIU's statistics.
    Criu {
        ms: f64,
        stats: Stats,
    },
    /// A lazy dump serves its pages: ready `ms` after it was asked for, the
    /// container frozen `frozen_ms` after (CRIU's "Seized task").
    Serving {
        ms: f64,
        frozen_ms: Option<f64>,
    },
    /// What the lazy-pages daemon pulled: `pages` on demand and in the
    /// background, besides `image_bytes` of pages sent with the images.
    Pulled {
        pages: u64,
        image_bytes: u64,
    },
    Running(bool),
    Sampled {
        cpu_ns: u64,
        rss_kib: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// `uname -r`.
    pub kernel: String,
    /// None, with why, where no usable CRIU is.
    pub criu: Result<CriuOnHost, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriuOnHost {
    pub version: String,
    pub origin: String,
    /// Ok where the kernel tracks dirty pages (`criu check --feature
    /// mem_dirty_track`): pre-copy by pre-dumps; else what CRIU said.
    pub dirty_tracking: Result<(), String>,
    /// Ok where CRIU can serve and pull lazy pages here (userfaultfd,
    /// large pipes): post-copy; else why not.
    pub lazy_pages: Result<(), String>,
}

/// A name the runner gives an images directory or a session: letters,
/// digits and dashes, so that it stays inside the session's directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_read_as_written() {
        let request = Request {
            id: 7,
            ask: Ask::Dump {
                images: "run1-2".into(),
                prev: Some("run1-1".into()),
                address: "10.246.0.2".parse().unwrap(),
                port: 27027,
                last: true,
                timeout_ms: 9000,
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(!text.contains('\n'), "one request is one line: {text}");
        let back: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
        let answer = Answer {
            id: 7,
            result: Err("criu dump failed".into()),
        };
        let back: Answer = serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert_eq!(back.result, answer.result);
    }

    #[test]
    fn names_that_could_leave_the_session_directory_are_not_plain() {
        assert!(is_plain_name("run1-2"));
        assert!(is_plain_name("3f2a9c1e-0b7d-4e55-9a61-2f0c8d9e1a2b"));
        for bad in ["", "..", "a/b", "../x", "a b", "images.1"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
