//! One `xl migrate` from dom0 to dom0, and what the toolstack's logs say
//! of it on dom0's clock; and the stream's path measured through the same
//! relays.

use super::dom0::RUN;
use super::toolstack::Dom0;
use super::{state_running, Xen, DOMAIN_NAME, MIGRATION_PORT, XL_TIMEOUT};
use crate::backend::{span_ms, Backend};
use crate::case::Case;
use crate::lab::{network, Lab};
use crate::measure::{Evacuation, Outcome, Phases};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What dom0's migsuite-migrate printed.
fn parse_kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The number a dom0 script printed as `key=`.
fn number(kv: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    kv.get(key).and_then(|v| v.parse().ok())
}

/// How much the calibration sends: a few seconds from nested dom0 to dom0,
/// ...
pub(super) const CALIBRATION_MIB: u32 = 96;
/// ... or what a slower real dom0 carries in this long, if less.
pub(super) const CALIBRATION_SECS: u32 = 5;

/// TCP goodput, Mbit/s, from `src`'s dom0 to `dst`'s over the migration
/// link, sent by `send` on `src` into migsuite-sink on `dst`, through
/// the relays an `xl migrate` stream takes (a pipe and dd on the way out;
/// dd and pv on the way in), timed on `dst`'s clock. This, not the link,
/// is what a dirty rate must stay below for pre-copy to converge.
pub(super) fn dom0_goodput(src: &dyn Dom0, dst: &dyn Dom0, send: &str) -> Result<f64> {
    let sent = src.sh(send, Duration::from_secs(60))?;
    anyhow::ensure!(
        sent.status == 0,
        "sending to dom0 {}: exit {}: {}",
        dst.index(),
        sent.status,
        sent.output.trim()
    );
    let out = dst.check(
        &format!("for i in $(seq 100); do [ -s {RUN}/sink.out ] && break; sleep 0.1; done; cat {RUN}/sink.out"),
        Duration::from_secs(20),
    )?;
    let kv = parse_kv(&out);
    match (
        number(&kv, "start"),
        number(&kv, "end"),
        number(&kv, "bytes"),
    ) {
        (Some(start), Some(end), Some(bytes)) if end > start && bytes > 0.0 => {
            Ok(bytes * 8.0 / (end - start) / 1e6)
        }
        _ => bail!("dom0 {}'s receiver said: {}", dst.index(), out.trim()),
    }
}

impl Xen {
    /// Readies `dst` to take one stream from `src` into `receiver`
    /// (migsuite-recv or migsuite-sink) and returns the address to send it
    /// to. A nested host listens on the lab's own migration link; a real
    /// dom0 takes only the other one's connection that opens with a fresh
    /// token, which the runner gives both over ssh.
    pub(super) fn ready_receiver(
        &self,
        lab: &Lab,
        src: &dyn Dom0,
        dst: &dyn Dom0,
        receiver: &str,
    ) -> Result<String> {
        let wait = Duration::from_secs(20);
        if self.nested {
            dst.check(
                &format!("migsuite-listen {MIGRATION_PORT} {receiver}"),
                wait,
            )?;
            return Ok(network::nested_addr(dst.index()).to_string());
        }
        let token = uuid::Uuid::new_v4().simple();
        for dom0 in [src, dst] {
            dom0.check(&format!("echo {token} > \"$MIGSUITE_TOKEN\""), wait)?;
        }
        let (from, to) = (
            &lab.host(src.index()).migration_address,
            &lab.host(dst.index()).migration_address,
        );
        dst.check(
            &format!("migsuite-listen-peer {to} {MIGRATION_PORT} {from} {receiver}"),
            wait,
        )?;
        Ok(to.to_string())
    }

    pub(super) fn try_evacuate(
        &mut self,
        lab: &Lab,
        case: &Case,
        progress: &dyn Fn(&str),
    ) -> Result<Evacuation> {
        let src = self.host(lab.source.index)?.clone();
        let dst = self.host(lab.destination.index)?.clone();
        let remote = !Arc::ptr_eq(&src, &dst);
        let source = self.source_domid.context("no guest was provisioned")?;
        let timeout_s = case.migration.timeout_ms.div_ceil(1000);
        let kill_ms = case.faults.kill_destination_after_ms;
        let receiver = if !remote {
            String::new()
        } else {
            let to = self.ready_receiver(lab, src.as_ref(), dst.as_ref(), "migsuite-recv")?;
            format!("migsuite-send-to {to} {MIGRATION_PORT}")
        };
        // One host: dom0's migsuite-migrate kills its own receiver; two:
        // the runner kills the other dom0's, unless the migration ended first.
        let (local_kill, fault) = match kill_ms {
            Some(ms) if remote => ("-".to_string(), Some(kill_receiver_after(&dst, ms))),
            Some(ms) => (ms.to_string(), None),
            None => ("-".to_string(), None),
        };
        progress(&format!(
            "xl migrate -s \"\" {DOMAIN_NAME} {} (Xen host {} -> {}), timeout {timeout_s} s",
            if remote {
                &receiver
            } else {
                "<receiver in dom0>"
            },
            src.index(),
            dst.index()
        ));
        let started = Instant::now();
        let a = src.sh(
            // An empty receiver ('') is dom0's own.
            &format!("migsuite-migrate {timeout_s} {local_kill} '{receiver}'"),
            Duration::from_secs(timeout_s + 60),
        )?;
        let returned = Instant::now();
        let fault_fired = fault.is_some_and(|(stop, fired)| {
            drop(stop);
            fired.join().unwrap_or(false)
        });
        let kv = parse_kv(&a.output);
        anyhow::ensure!(
            kv.contains_key("rc"),
            "dom0's migsuite-migrate said: {}",
            a.output.trim()
        );
        let rc: i32 = kv.get("rc").and_then(|v| v.parse().ok()).unwrap_or(-1);
        let elapsed_ms = number(&kv, "start")
            .zip(number(&kv, "end"))
            .map(|(s, e)| (e - s) * 1000.0);
        let read = |h: &Arc<dyn Dom0>, command: &str| {
            h.sh(command, Duration::from_secs(20))
                .map(|a| a.output)
                .unwrap_or_default()
        };
        let bytes: Option<u64> = if remote {
            read(
                &dst,
                &format!("for i in $(seq 50); do [ -s {RUN}/recv.bytes ] && break; sleep 0.1; done; tail -n 1 {RUN}/recv.bytes"),
            )
            .trim()
            .parse()
            .ok()
        } else {
            kv.get("bytes").and_then(|v| v.parse().ok())
        };
        let send = read(&src, &format!("cat {RUN}/send.log"));
        let recv = read(&dst, &format!("cat {RUN}/recv.log"));
        // The receiver's stamps are on the other dom0's clock.
        let skew_s = if remote {
            let (s, s_err) = src.clock_offset()?;
            let (d, d_err) = dst.clock_offset()?;
            progress(&format!(
                "dom0 clocks: Xen host {} is {:+.1} ms from Xen host {} (+-{:.1} ms)",
                dst.index(),
                (d - s) * 1000.0,
                src.index(),
                (s_err + d_err) * 1000.0
            ));
            d - s
        } else {
            0.0
        };
        let stats = stream_stats(&send, &recv, skew_s);
        progress(&format!(
            "xl migrate returned {rc} after {} ms (dom0 clock: {:.0} ms), {} MiB in the stream",
            started.elapsed().as_millis(),
            elapsed_ms.unwrap_or(f64::NAN),
            bytes.unwrap_or(0) >> 20
        ));
        if rc != 0 {
            let mut reason = format!("xl migrate failed (exit {rc}): {}", xl_error(&send));
            if kv.contains_key("timedout") {
                reason = format!(
                    "timed out after {} ms, migration cancelled (receiver killed); {reason}",
                    case.migration.timeout_ms
                );
            }
            if kv.contains_key("fault") || fault_fired {
                reason.push_str(&format!(
                    "; the destination (xl migrate-receive) had been killed {} ms into the migration",
                    kill_ms.unwrap_or_default()
                ));
            }
            if remote {
                let _ = dst.sh(
                    &format!("migsuite-kill-receiver; xl destroy {DOMAIN_NAME}--incoming 2>/dev/null; true"),
                    XL_TIMEOUT,
                );
            }
            // The sender resumes the domain after a failed migration.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.running_on_source() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(Evacuation::failed(reason, self.running_on_source()));
        }
        let (domid, flags) = self
            .domain(lab.destination.index, DOMAIN_NAME)
            .context("after xl migrate, no domain x0 on the destination")?;
        if remote {
            anyhow::ensure!(
                self.domain(lab.source.index, &source.to_string()).is_none(),
                "after xl migrate, the source domain {source} is still on Xen host {}",
                src.index()
            );
        } else {
            // Same host: the received domain took the name; the source is gone.
            anyhow::ensure!(
                domid != source,
                "after xl migrate, x0 is still the source domain {source}"
            );
        }
        self.migrated = true;
        anyhow::ensure!(
            state_running(&flags),
            "the migrated domU {domid} is not running (xl state {flags})"
        );
        Ok(Evacuation {
            outcome: Outcome::Completed,
            completed_at: Some(returned),
            reported_total_ms: elapsed_ms,
            reported_downtime_ms: stats.downtime_ms,
            setup_time_ms: None,
            bytes_transferred: bytes,
            memory_iterations: stats.iterations,
            // From xl's own clock in dom0: the stream, then the suspended
            // guest's last pages; what the runner waited beyond is getting
            // the command to dom0 and back.
            phases: Phases {
                preparation_ms: elapsed_ms
                    .zip(span_ms(Some(started), Some(returned)))
                    .map(|(e, wall)| (wall - e).max(0.0)),
                memory_transfer_ms: elapsed_ms
                    .zip(stats.downtime_ms)
                    .map(|(e, d)| (e - d).max(0.0)),
                stop_and_copy_ms: stats.downtime_ms,
                resume_ms: None,
            },
            stream_ms: elapsed_ms,
            ..Default::default()
        })
    }
}

/// Kills `dst`'s migration receiver `ms` into the migration, unless the
/// returned sender is dropped first; the thread says whether it killed.
fn kill_receiver_after(
    dst: &Arc<dyn Dom0>,
    ms: u64,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let dst = dst.clone();
    let thread = std::thread::spawn(move || {
        stopped.recv_timeout(Duration::from_millis(ms)) == Err(RecvTimeoutError::Timeout)
            && dst.sh("migsuite-kill-receiver", XL_TIMEOUT).is_ok()
    });
    (stop, thread)
}

#[derive(Debug, Default)]
struct StreamStats {
    iterations: Option<u64>,
    downtime_ms: Option<f64>,
}

/// dom0 timestamp of the first line of a stamped log containing `text`.
fn stamped(log: &str, text: &str) -> Option<f64> {
    log.lines()
        .find(|l| l.contains(text))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What xl -vvv's logs say about the migration. The downtime is what the
/// toolstack's own messages bracket, on the sender's dom0 clock: from the
/// sender's "guest has suspended" to the receiver's "Domain started
/// successfully" (after the unpause), whose clock is `skew_s` ahead. xl
/// reports no iteration count (libxc's progress reports are dropped by
/// libxl: "progress report: ignored").
fn stream_stats(send: &str, recv: &str, skew_s: f64) -> StreamStats {
    let suspended = stamped(send, "guest has suspended");
    let started = stamped(recv, "Domain started succ").map(|t| t - skew_s);
    StreamStats {
        iterations: None,
        downtime_ms: suspended
            .zip(started)
            .map(|(s, e)| (e - s) * 1000.0)
            .filter(|d| *d >= 0.0),
    }
}

/// The lines of xl's log that say what went wrong.
fn xl_error(log: &str) -> String {
    // Lines carry dom0's timestamp first (see dom0::MIGRATE): drop it.
    let lines: Vec<&str> = log
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((stamp, rest)) if stamp.parse::<f64>().is_ok() => rest,
            _ => l,
        })
        .filter(|l| !l.contains(": debug: ") && !l.contains(": detail: ") && !l.trim().is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        "(no log)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downtime_is_bracketed_by_xl_messages_on_dom0s_clock() {
        let send = "1795619339.836882 Saving to migration stream\n1795619356.000100 libxl: debug: libxl_dom_suspend.c:358:suspend_common_wait_guest_check: Domain 1:guest has suspended\n";
        let recv = "1795619356.100000 xc: info: Restore successful\n1795619356.672600 migration target: Domain started successsfully.\n";
        let s = stream_stats(send, recv, 0.0);
        assert!((s.downtime_ms.unwrap() - 672.5).abs() < 0.01);
        assert_eq!(s.iterations, None);
        assert_eq!(stream_stats(send, "", 0.0).downtime_ms, None);
        // The receiver's dom0 clock runs 0.5 s ahead of the sender's.
        let s = stream_stats(send, recv, 0.5);
        assert!((s.downtime_ms.unwrap() - 172.5).abs() < 0.01);
        // More skew than the stamps leave room for: no downtime at all.
        assert_eq!(stream_stats(send, recv, 1.0).downtime_ms, None);
    }

    #[test]
    fn migrate_output_reads_as_keys_and_values() {
        let kv = parse_kv("rc=0\nstart=1.5\nend=2.25\nbytes=353438693\n");
        assert_eq!(kv["rc"], "0");
        assert_eq!(kv["bytes"], "353438693");
        assert_eq!(number(&kv, "end"), Some(2.25));
    }

    #[test]
    fn xl_error_keeps_the_last_meaningful_lines() {
        let log = "1 libxl: debug: x\n2 xc: error: Dom 1 not suspended\n3 Migration failed, resuming at sender.\n";
        assert_eq!(
            xl_error(log),
            "xc: error: Dom 1 not suspended | Migration failed, resuming at sender."
        );
    }
}
