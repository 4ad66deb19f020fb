//! openvz post-copy on a real lab: CRIU's lazy pages, run on the hosts.
//! The source's dump freezes the container and writes its small images,
//! but keeps its memory, which it serves on its own migration address; the
//! images go host to host over ssh; the destination starts a lazy-pages
//! daemon that pulls pages from the source (those the restored tasks fault
//! on first, the rest in the background) and restores the container at
//! once. The source's stopped tasks go once the last page has moved. A
//! failure before that kills the destination's copy and resumes the source.
//!
//! Downtime: from the freeze (CRIU's "Seized task") until the restored
//! tasks run; total time: until the source has served the last page.

use super::evacuating::{criu_reply, Evacuating};
use super::session::{HostSession, ANSWER_TIMEOUT};
use super::{Ask, Reply};
use crate::backend::criu::post_copy::{completed, Moments};
use crate::backend::span_ms;
use crate::case::Case;
use crate::lab::Lab;
use crate::measure::Evacuation;
use std::time::{Duration, Instant};

/// Where the source's dump serves the pages, on its migration address.
const LAZY_PAGES_PORT: u16 = 27028;
const IMAGES: &str = "lazy";

/// Moves the container from `lab.source` to `lab.destination` by post-copy,
/// each host driven through its session in `sessions` (by host index).
pub(super) fn evacuate(
    sessions: &[HostSession; 2],
    lab: &Lab,
    case: &Case,
    progress: &dyn Fn(&str),
) -> Result<Evacuation, String> {
    let begun = Evacuating::begin(sessions, lab, case)?;
    let (started, source, destination) = (begun.started, begun.source, begun.destination);
    let peer = begun.peer.clone();
    let left_ms = || begun.left_ms();
    let address = lab.source.migration_address;
    progress(&format!(
        "dumping the container; its memory stays on the source, served from {address} (post-copy)"
    ));
    let asked = Instant::now();
    let timeout_ms = left_ms();
    let serving = source.ask(
        Ask::ServeLazily {
            images: IMAGES.into(),
            address,
            port: LAZY_PAGES_PORT,
            timeout_ms,
        },
        Duration::from_millis(timeout_ms) + ANSWER_TIMEOUT,
    );
    let ready_at = Instant::now();
    // The host's figures, placed on the runner's clock from the answer back.
    let frozen_at = match serving {
        Ok(Reply::Serving {
            ms: took,
            frozen_ms,
        }) => frozen_ms
            .and_then(|f| {
                ready_at.checked_sub(Duration::from_secs_f64((took - f).max(0.0) / 1000.0))
            })
            .map(|at| at.max(asked)),
        Ok(other) => {
            return Err(fail(
                source,
                destination,
                format!("unexpected answer {other:?}"),
            ))
        }
        Err(why) => return Err(fail(source, destination, why)),
    };
    // The images to the destination, its daemon, then the restore.
    let handed_over = || -> Result<_, String> {
        source.ask(
            Ask::Send {
                peer,
                paths: vec![
                    format!("{}{IMAGES}", super::serve::IMAGES_PREFIX),
                    format!("{}/console.log", super::ROOT),
                ],
            },
            ANSWER_TIMEOUT,
        )?;
        destination.ask(
            Ask::PullLazily {
                images: IMAGES.into(),
                address,
                port: LAZY_PAGES_PORT,
            },
            ANSWER_TIMEOUT,
        )?;
        progress("restoring the container on the destination; its memory follows on demand");
        let restore_started = Instant::now();
        let timeout_ms = left_ms();
        let restored = destination.ask(
            Ask::Restore {
                images: IMAGES.into(),
                bridge: lab.destination.bridge.clone(),
                lazy: true,
                timeout_ms,
            },
            Duration::from_millis(timeout_ms) + ANSWER_TIMEOUT,
        )?;
        Ok((restore_started, criu_reply(restored)?.1))
    };
    let (restore_started, restore_stats) = match handed_over() {
        Ok(r) => r,
        Err(why) => return Err(fail(source, destination, why)),
    };
    let restored_at = Instant::now();
    // Until the source has served its last page.
    let timeout_ms = left_ms();
    if let Err(why) = source.ask(
        Ask::Served { timeout_ms },
        Duration::from_millis(timeout_ms) + ANSWER_TIMEOUT,
    ) {
        return Err(fail(source, destination, why));
    }
    let done_at = Instant::now();
    let (pages, image_bytes) = match destination.ask(Ask::Pulled, ANSWER_TIMEOUT)? {
        Reply::Pulled { pages, image_bytes } => (pages, image_bytes),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if let Err(e) = source.ask(Ask::Retire, ANSWER_TIMEOUT) {
        progress(&format!("the source's stopped container did not go: {e}"));
    }
    let at = Moments {
        started,
        frozen_at,
        restore_started,
        restored_at,
        done_at,
    };
    Ok(Evacuation {
        // While the source served its pages.
        stream_ms: span_ms(Some(ready_at), Some(done_at)),
        ..completed(&at, pages, image_bytes, &restore_stats, progress)
    })
}

/// After a failure: the destination's copy and daemon go, the source's
/// container runs again (its serving dump killed first); `why`, with what
/// did not come back.
fn fail(source: &HostSession, destination: &HostSession, why: String) -> String {
    let _ = destination.ask(Ask::Pulled, ANSWER_TIMEOUT);
    let _ = destination.ask(Ask::Retire, ANSWER_TIMEOUT);
    match source.ask(Ask::Resume, ANSWER_TIMEOUT) {
        Ok(_) => format!(
            "{why}; the destination's copy was killed and the source resumed from its freeze"
        ),
        Err(e) => format!("{why}; resuming the source's container: {e}"),
    }
}
