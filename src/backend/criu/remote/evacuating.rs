//! What pre-copy and post-copy on a real lab's hosts share: an evacuation
//! begun on both hosts, with its deadline, and CRIU's answers read.

use super::session::{HostSession, ANSWER_TIMEOUT};
use super::{Ask, Reply};
use crate::backend::criu::stats::Stats;
use crate::case::Case;
use crate::lab::{Host, Lab};
use std::time::{Duration, Instant};

/// An evacuation begun on both hosts: their sessions, the destination's
/// ssh, the images of earlier runs cleared, and the time left until the
/// case's timeout.
pub(super) struct Evacuating<'a> {
    pub started: Instant,
    deadline: Instant,
    pub source: &'a HostSession,
    pub destination: &'a HostSession,
    pub peer: String,
}

impl<'a> Evacuating<'a> {
    /// `sessions` by host index.
    pub fn begin(
        sessions: &'a [HostSession; 2],
        lab: &Lab,
        case: &Case,
    ) -> Result<Evacuating<'a>, String> {
        let started = Instant::now();
        let (source, destination) = (
            &sessions[lab.source.index as usize],
            &sessions[lab.destination.index as usize],
        );
        let peer = ssh_of(&lab.destination)?;
        for s in [source, destination] {
            s.ask(Ask::ClearImages, ANSWER_TIMEOUT)?;
        }
        Ok(Evacuating {
            started,
            deadline: started + Duration::from_millis(case.migration.timeout_ms),
            source,
            destination,
            peer,
        })
    }

    pub fn left_ms(&self) -> u64 {
        self.deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    }
}

/// The host's ssh destination, which the inventory's rules require of an
/// openvz host of a real lab.
pub(super) fn ssh_of(host: &Host) -> Result<String, String> {
    host.ssh
        .clone()
        .ok_or_else(|| format!("host {} has no `ssh` in the inventory", host.name))
}

/// How long a dump or restore took on the host, and CRIU's statistics.
pub(super) fn criu_reply(reply: Reply) -> Result<(f64, Stats), String> {
    match reply {
        Reply::Criu { ms, stats } => Ok((ms, stats)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
