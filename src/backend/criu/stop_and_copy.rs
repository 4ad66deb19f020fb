//! Stop-and-copy over the migration link. CRIU freezes the container on the
//! source and sends its memory pages to a page server on the destination
//! host, while the rest of its state (small images: processes, files,
//! namespaces) goes to the shared storage; the destination restores it in
//! its own network namespace, the veth's outer end on its bridge.
//!
//! The source's tasks are left stopped, not killed, by the dump: they are
//! killed once the destination runs the container, and resumed if the
//! restore fails, times out or is killed, so a failed evacuation leaves the
//! container running on the source.
//!
//! Downtime: the container runs nowhere from its freeze until the restored
//! tasks resume, which is CRIU's frozen time of the dump plus the time from
//! the dump's end until `criu restore` reports its statistics (copying the
//! small images and the restore itself).

use super::phases::{self, copy_images, errors, ms, read_pid, Clock};
use super::stats::Stats;
use super::OpenVz;
use crate::backend::span_ms;
use crate::case::Case;
use crate::lab::Lab;
use crate::measure::{Evacuation, Outcome, Phases};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

const PAGE_SERVER_PORT: &str = "27027";

pub(super) fn evacuate(
    vz: &mut OpenVz,
    lab: &Lab,
    case: &Case,
    progress: &dyn Fn(&str),
) -> Result<Evacuation, String> {
    let source = vz.source_pid()?;
    let started = Instant::now();
    let mut clock = Clock::new(case, started);
    let (src, dst) = (
        phases::simulated(&lab.source)?,
        phases::simulated(&lab.destination)?,
    );
    let (src_ns, dst_ns) = (&src.netns.name, &dst.netns.name);
    let dst_addr = dst.link_addr.to_string();
    let (images, dest) = phases::image_dirs(lab)?;
    let path = |p: &Path| p.display().to_string();

    // The page server daemonizes once it listens.
    let ps_pidfile = dest.join("page-server.pid");
    vz.criu
        .run(
            Some(dst_ns),
            &[
                "page-server",
                "--daemon",
                "--images-dir",
                &path(&dest),
                "--address",
                &dst_addr,
                "--port",
                PAGE_SERVER_PORT,
                "--pidfile",
                &path(&ps_pidfile),
                "--log-file",
                "page-server.log",
            ],
        )
        .map_err(|e| format!("starting the page server on the destination: {e:#}"))?;
    let page_server = read_pid(&ps_pidfile)?;
    let setup_ms = ms(started.elapsed());

    clock.start_transfer();
    progress(&format!(
        "dumping the container to the page server on {dst_addr} (stop-and-copy)"
    ));
    let mut dump = vz
        .criu
        .command(
            Some(src_ns),
            &[
                "dump",
                "--tree",
                &source.to_string(),
                "--images-dir",
                &path(&images),
                "--page-server",
                "--address",
                &dst_addr,
                "--port",
                PAGE_SERVER_PORT,
                "--leave-stopped",
                "--network-lock",
                "skip",
                "--display-stats",
                "--log-file",
                "dump.log",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting criu dump: {e}"))?;
    let dumped = phases::wait_dump(&mut dump, &mut clock, "page server", &page_server);
    let dump_ended = Instant::now();
    let failure = match dumped {
        Err(e) => Some(e),
        Ok(None) => Some(format!(
            "timed out after {} ms in the dump, criu dump killed",
            clock.timeout_ms
        )),
        Ok(Some(s)) if !s.success() => Some(format!(
            "criu dump failed ({s}): {}",
            errors(&images.join("dump.log"))
        )),
        Ok(Some(_)) => None,
    };
    if let Some(why) = failure {
        let _ = dump.kill();
        let _ = dump.wait();
        page_server.kill();
        // CRIU resumes the tasks of a failed dump; a killed one cannot.
        phases::roll_back(vz);
        return Err(clock.reason(why));
    }
    let mut out = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut dump.stdout.take().unwrap(), &mut out) {
        phases::roll_back(vz);
        return Err(format!("reading criu dump's statistics: {e}"));
    }
    let dump_stats = Stats::parse(&out);

    if let Err(why) = copy_images(&images, &dest) {
        phases::roll_back(vz);
        return Err(why);
    }
    progress("restoring the container on the destination");
    let (restored, restore_stats) = match phases::restore(vz, lab, &dest, &[], &mut clock) {
        Ok(r) => r,
        Err(why) => {
            phases::roll_back(vz);
            return Err(clock.reason(why));
        }
    };
    let restored_at = Instant::now();
    phases::adopt(vz, restored);
    phases::retire_source(vz);

    let frozen_ms = dump_stats.ms("Frozen time");
    progress(&phases::restored_line(frozen_ms, &restore_stats));
    // The memory moves while the container is frozen: no live transfer.
    let frozen_at = phases::frozen_at(dump_ended, frozen_ms);
    Ok(Evacuation {
        outcome: Outcome::Completed,
        completed_at: Some(restored_at),
        reported_total_ms: Some(ms(restored_at - started)),
        reported_downtime_ms: frozen_ms.map(|f| f + ms(restored_at - dump_ended)),
        setup_time_ms: Some(setup_ms),
        bytes_transferred: dump_stats
            .get("Memory pages written")
            .map(|p| p * phases::page_size()),
        memory_iterations: Some(1),
        phases: Phases {
            preparation_ms: span_ms(Some(started), frozen_at),
            memory_transfer_ms: Some(0.0),
            stop_and_copy_ms: frozen_ms,
            resume_ms: span_ms(Some(dump_ended), Some(restored_at)),
        },
        ..Default::default()
    })
}
