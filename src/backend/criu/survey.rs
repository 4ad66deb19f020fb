//! What a real host offers the openvz row, asked by a `criu-host` session
//! over its `ssh` (`migsuite hosts`), as a case asks it.

use super::remote::{session, Ask, Reply};
use crate::inventory;

/// What a real host's CRIU can do, asked by a `criu-host` session over
/// its `ssh`, as a case asks it.
pub(super) fn criu_on(host: &inventory::Host) -> Result<String, String> {
    let ssh = host.ssh.as_deref().ok_or("openvz needs the host's `ssh`")?;
    let asked = session::HostSession::open(&host.name, ssh, &uuid::Uuid::new_v4().to_string())
        .map_err(|e| format!("{e:#}"))?
        .ask(Ask::Describe, session::ANSWER_TIMEOUT)?;
    let Reply::Described(d) = asked else {
        return Err(format!("unexpected answer {asked:?}"));
    };
    let criu = d.criu?;
    Ok(format!(
        "CRIU {} ({}) on kernel {}, over ssh {ssh}; {}; {}; stop-and-copy",
        criu.version,
        criu.origin,
        d.kernel,
        match criu.dirty_tracking {
            Ok(()) => "tracks dirty pages: precopy".to_string(),
            Err(why) => format!("no precopy (tracks no dirty pages: {why})"),
        },
        match criu.lazy_pages {
            Ok(()) => "serves lazy pages: postcopy".to_string(),
            Err(why) => format!("no postcopy ({why})"),
        }
    ))
}
