//! openvz on a real lab: the container runs on the hosts themselves, each
//! driven through its `criu-host` session. Pre-copy as the study's OpenVZ
//! did it: CRIU pre-dumps the running container's memory to a page server
//! on the destination, again and again, each pass only what was dirtied
//! since the last (the kernel's soft-dirty tracking); then it freezes the
//! container and dumps what is left, the small images go host to host,
//! and the destination restores. Stop-and-copy is the last pass alone;
//! post-copy is in `post_copy`.

use super::evacuating::{criu_reply, ssh_of, Evacuating};
use super::session::{HostSession, ANSWER_TIMEOUT};
use super::{Ask, CriuOnHost, Description, Reply};
use crate::backend::criu::container;
use crate::backend::criu::phases::{self, ms, page_size};
use crate::backend::{span_ms, Backend, BackendInfo};
use crate::case::{Case, Strategy};
use crate::lab::{Host, Lab};
use crate::measure::{Evacuation, Outcome, Phases, Progress};
use crate::sampler::{Reported, Source};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the destination's page server listens, on its migration address.
const PAGE_SERVER_PORT: u16 = 27027;
/// Pre-copy stops after this many pre-dumps, ...
const MAX_PRE_DUMPS: u64 = 8;
/// ... or after one that wrote this few pages (1 MiB of 4 KiB pages), ...
const FEW_PAGES: u64 = 256;
/// ... or after one that wrote no less than this share of the one before:
/// the workload dirties as fast as the link carries, more passes gain
/// nothing.
const NOT_CONVERGING: f64 = 0.9;
/// A sample is dropped rather than waited for longer than this.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
const IMAGES_LAST: &str = "last";

pub struct OnRealHosts {
    info: BackendInfo,
    /// The session name on both hosts (their directories match, as the
    /// container's root must).
    session: String,
    /// By host index in the pair, once `prepare` opened them.
    sessions: Option<Arc<[HostSession; 2]>>,
    /// What each host said of itself (its name, its description), by
    /// host index.
    described: Vec<(String, Description)>,
    /// The host index the container runs on.
    guest_on: Option<u8>,
}

impl Default for OnRealHosts {
    fn default() -> OnRealHosts {
        OnRealHosts::new()
    }
}

impl OnRealHosts {
    pub fn new() -> OnRealHosts {
        OnRealHosts {
            info: BackendInfo {
                accel: "none (containers share the host kernel)".into(),
                hypervisor_version: "CRIU of the lab's hosts (not yet asked)".into(),
                toolstack_version: "migsuite criu-host over ssh".into(),
                storage: "container root copied host to host before the first run: not part \
                          of a migration"
                    .into(),
            },
            session: uuid::Uuid::new_v4().to_string(),
            sessions: None,
            described: Vec::new(),
            guest_on: None,
        }
    }

    /// How `case`'s container moves: its strategy, or post-copy where it
    /// asks pre-copy of hosts that track no dirty pages.
    fn method(&self, case: &Case) -> Strategy {
        live_method(case.migration.strategy, &self.described).0
    }

    /// Both hosts' sessions, by host index (shared with the sampler).
    fn sessions(&self) -> Result<Arc<[HostSession; 2]>, String> {
        self.sessions
            .clone()
            .ok_or_else(|| "the hosts' CRIU sessions are not open".to_string())
    }

    fn try_evacuate(
        &mut self,
        lab: &Lab,
        case: &Case,
        progress: &dyn Fn(&str),
    ) -> Result<Evacuation, String> {
        let sessions = self.sessions()?;
        let begun = Evacuating::begin(&sessions, lab, case)?;
        let (started, source, destination) = (begun.started, begun.source, begun.destination);
        let peer = begun.peer.clone();
        let left_ms = || begun.left_ms();
        let address = lab.destination.migration_address;
        let page_server = |images: &str, prev: &Option<String>| {
            destination.ask(
                Ask::PageServer {
                    images: images.into(),
                    prev: prev.clone(),
                    address,
                    port: PAGE_SERVER_PORT,
                },
                ANSWER_TIMEOUT,
            )
        };
        let dump = |images: &str, prev: &Option<String>, last: bool| {
            let timeout_ms = left_ms();
            let reply = source.ask(
                Ask::Dump {
                    images: images.into(),
                    prev: prev.clone(),
                    address,
                    port: PAGE_SERVER_PORT,
                    last,
                    timeout_ms,
                },
                Duration::from_millis(timeout_ms) + ANSWER_TIMEOUT,
            )?;
            criu_reply(reply)
        };
        let page = page_size();
        let mut passes: Vec<Progress> = Vec::new();
        let mut transferred = 0;
        let mut stream_ms = 0.0;
        let mut setup_ms = None;
        let mut prev: Option<String> = None;
        let pre_copy = self.method(case) == Strategy::Precopy;
        let mut written_before: Option<u64> = None;
        loop {
            if !pre_copy {
                break;
            }
            let n = passes.len() as u64 + 1;
            let images = format!("pass-{n}");
            page_server(&images, &prev)?;
            setup_ms.get_or_insert(ms(started.elapsed()));
            let (took_ms, stats) = dump(&images, &prev, false)?;
            let written = stats.get("Memory pages written").unwrap_or(0);
            transferred += written * page;
            stream_ms += took_ms;
            passes.push(Progress {
                at: Instant::now(),
                transferred_bytes: transferred,
                remaining_bytes: written * page,
                pass: n,
                dirty_bytes_s: None,
                bytes_s: (took_ms > 0.0)
                    .then(|| (written * page) as f64 / took_ms * 1000.0)
                    .map(|r| r as u64),
                expected_downtime_ms: None,
            });
            progress(&format!(
                "pre-dump {n}: {} pages to the page server on {address} in {took_ms:.0} ms",
                written
            ));
            prev = Some(images);
            let converging = written_before
                .is_none_or(|before| (written as f64) < before as f64 * NOT_CONVERGING);
            if n >= MAX_PRE_DUMPS || written <= FEW_PAGES || !converging {
                break;
            }
            written_before = Some(written);
        }
        page_server(IMAGES_LAST, &prev)?;
        setup_ms.get_or_insert(ms(started.elapsed()));
        progress(&format!(
            "dumping the frozen container to the page server on {address}"
        ));
        let (took_ms, stats) = dump(IMAGES_LAST, &prev, true)?;
        let dump_ended = Instant::now();
        let written = stats.get("Memory pages written").unwrap_or(0);
        transferred += written * page;
        stream_ms += took_ms;
        let frozen_ms = stats.ms("Frozen time");
        // From here the container is stopped on the source: a failure
        // resumes it there.
        let handed_over = source
            .ask(
                Ask::Send {
                    peer: peer.clone(),
                    paths: vec![
                        format!("{}{IMAGES_LAST}", super::serve::IMAGES_PREFIX),
                        format!("{}/console.log", super::ROOT),
                    ],
                },
                ANSWER_TIMEOUT,
            )
            .and_then(|_| {
                progress("restoring the container on the destination");
                let timeout_ms = left_ms();
                destination.ask(
                    Ask::Restore {
                        images: IMAGES_LAST.into(),
                        bridge: lab.destination.bridge.clone(),
                        lazy: false,
                        timeout_ms,
                    },
                    Duration::from_millis(timeout_ms) + ANSWER_TIMEOUT,
                )
            })
            .and_then(criu_reply);
        let restored = match handed_over {
            Ok((_, restored)) => restored,
            Err(why) => {
                let _ = destination.ask(Ask::Retire, ANSWER_TIMEOUT);
                let resumed = source.ask(Ask::Resume, ANSWER_TIMEOUT);
                return Err(match resumed {
                    Ok(_) => why,
                    Err(e) => format!("{why}; resuming the source's container: {e}"),
                });
            }
        };
        let restored_at = Instant::now();
        self.guest_on = Some(lab.destination.index);
        if let Err(e) = source.ask(Ask::Retire, ANSWER_TIMEOUT) {
            progress(&format!("the source's stopped container did not go: {e}"));
        }
        progress(&phases::restored_line(frozen_ms, &restored));
        let frozen_at = phases::frozen_at(dump_ended, frozen_ms);
        let memory_transfer_ms = passes
            .first()
            .and_then(|_| span_ms(Some(started), frozen_at))
            .map(|to_freeze| to_freeze - setup_ms.unwrap_or(0.0));
        Ok(Evacuation {
            outcome: Outcome::Completed,
            completed_at: Some(restored_at),
            reported_total_ms: Some(ms(restored_at - started)),
            reported_downtime_ms: frozen_ms.map(|f| f + ms(restored_at - dump_ended)),
            downtime_limit_ms: None,
            setup_time_ms: setup_ms,
            bytes_transferred: Some(transferred),
            memory_iterations: Some(passes.len() as u64 + 1),
            phases: Phases {
                preparation_ms: setup_ms,
                memory_transfer_ms: memory_transfer_ms.or(Some(0.0)),
                stop_and_copy_ms: frozen_ms,
                resume_ms: span_ms(Some(dump_ended), Some(restored_at)),
            },
            stream_ms: Some(stream_ms),
            progress: passes,
        })
    }
}

/// How the container moves for `strategy` on the hosts that `described`
/// themselves: live as the study's OpenVZ moved, pre-copy where every
/// host's kernel tracks dirty pages, else post-copy (lazy pages) where
/// every host serves them, with why; otherwise the strategy asked.
fn live_method(
    strategy: Strategy,
    described: &[(String, Description)],
) -> (Strategy, Option<String>) {
    let criu: Vec<(&String, &CriuOnHost)> = described
        .iter()
        .filter_map(|(h, d)| Some((h, d.criu.as_ref().ok()?)))
        .collect();
    let untracked = criu
        .iter()
        .find_map(|(h, c)| c.dirty_tracking.as_ref().err().map(|why| (h, why)));
    match untracked {
        Some((host, why))
            if strategy == Strategy::Precopy
                && criu.len() == described.len()
                && criu.iter().all(|(_, c)| c.lazy_pages.is_ok()) =>
        {
            (
                Strategy::Postcopy,
                Some(format!(
                    "host {host}'s kernel tracks no dirty pages for CRIU's pre-dumps ({why})"
                )),
            )
        }
        _ => (strategy, None),
    }
}

/// Why a host's CRIU cannot migrate by `strategy`; None if it can.
fn criu_refusal(host: &str, d: &Description, strategy: Strategy) -> Option<String> {
    let criu = match &d.criu {
        Ok(c) => c,
        Err(why) => return Some(format!("host {host} has no usable CRIU: {why}")),
    };
    match strategy {
        Strategy::Precopy => criu.dirty_tracking.as_ref().err().map(|why| {
            format!(
                "host {host}'s kernel {} does not track dirty pages for CRIU's pre-dumps \
                 (`criu check --feature mem_dirty_track`: {why}); migrate by stop-and-copy",
                d.kernel
            )
        }),
        Strategy::Postcopy => criu.lazy_pages.as_ref().err().map(|why| {
            format!(
                "host {host} cannot serve or pull CRIU's lazy pages for post-copy ({why}); \
                 migrate by precopy or stop-and-copy"
            )
        }),
        Strategy::StopAndCopy => None,
        other => Some(format!(
            "openvz migrates on a real lab's hosts by precopy, postcopy or stop-and-copy, not \
             {other}"
        )),
    }
}

fn versions(described: &[(String, &CriuOnHost)]) -> String {
    let mut by_version: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (host, c) in described {
        by_version
            .entry(format!("{} ({})", c.version, c.origin))
            .or_default()
            .push(host);
    }
    by_version
        .into_iter()
        .map(|(v, hosts)| format!("CRIU {v} on host {}", hosts.join(" and ")))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Backend for OnRealHosts {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Opens a session on each host and asks what its CRIU can do.
    fn prepare(&mut self, lab: &Lab, case: &Case) -> Result<()> {
        let mut by_index: Vec<&Host> = vec![&lab.source, &lab.destination];
        by_index.sort_by_key(|h| h.index);
        let open = |h: &Host| {
            HostSession::open(&h.name, &ssh_of(h).map_err(|e| anyhow!(e))?, &self.session)
        };
        let sessions = Arc::new([open(by_index[0])?, open(by_index[1])?]);
        // Each host logs in to the other now, not while a container is
        // frozen waiting for its images.
        for (s, peer) in sessions.iter().zip([by_index[1], by_index[0]]) {
            let peer = ssh_of(peer).map_err(|e| anyhow!(e))?;
            s.ask(Ask::Connect { peer }, ANSWER_TIMEOUT)
                .map_err(|e| anyhow!(e))?;
        }
        let mut described = Vec::new();
        for (h, s) in by_index.iter().zip(sessions.iter()) {
            match s
                .ask(Ask::Describe, ANSWER_TIMEOUT)
                .map_err(|e| anyhow!(e))?
            {
                Reply::Described(d) => described.push((h.name.clone(), d)),
                other => bail!("host {}: unexpected answer {other:?}", h.name),
            }
        }
        // The case's strategy and its variants': each run moves by its own.
        let mut methods: Vec<(Strategy, Option<String>)> = Vec::new();
        let strategies = std::iter::once(&case.migration)
            .chain(case.variants.iter().map(|v| &v.migration))
            .map(|m| m.strategy);
        for strategy in strategies {
            let (method, why) = live_method(strategy, &described);
            for (host, d) in &described {
                if let Some(refused) = criu_refusal(host, d, method) {
                    bail!(refused);
                }
            }
            if !methods.iter().any(|(m, _)| *m == method) {
                methods.push((method, why));
            }
        }
        let criu: Vec<(String, &CriuOnHost)> = described
            .iter()
            .filter_map(|(h, d)| Some((h.clone(), d.criu.as_ref().ok()?)))
            .collect();
        self.info.hypervisor_version = versions(&criu);
        let how = methods
            .iter()
            .map(|(method, why)| {
                format!(
                    "{}{}",
                    match method {
                        Strategy::Precopy => "pre-dump, dump, page-server",
                        Strategy::Postcopy => "lazy dump, lazy-pages",
                        _ => "dump, page-server",
                    },
                    why.as_ref()
                        .map(|w| format!(" (post-copy, not pre-copy: {w})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.info.toolstack_version = format!(
            "criu {how} and restore on the hosts, by migsuite criu-host over ssh (no daemon)"
        );
        self.described = described;
        self.sessions = Some(sessions);
        Ok(())
    }

    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()> {
        let sessions = self.sessions().map_err(|e| anyhow!(e))?;
        let source = &sessions[lab.source.index as usize];
        let peer = ssh_of(&lab.destination).map_err(|e| anyhow!(e))?;
        let ask = |s: &HostSession, ask: Ask| s.ask(ask, ANSWER_TIMEOUT).map_err(|e| anyhow!(e));
        ask(source, Ask::WriteRoot)?;
        // The same tree on both hosts, byte for byte: CRIU restores the
        // files it dumped.
        ask(
            source,
            Ask::Send {
                peer,
                paths: vec![super::ROOT.into()],
            },
        )?;
        ask(
            source,
            Ask::Start {
                bridge: lab.source.bridge.clone(),
                mtu: case.link.mtu,
                agent_args: agent_args.into(),
            },
        )
        .context("starting the container on the source host")?;
        self.guest_on = Some(lab.source.index);
        Ok(())
    }

    fn check_guest(&self, hello: &BTreeMap<String, String>) -> Result<()> {
        let on = self.guest_on.context("no container was started")? as usize;
        let (_, host) = self.described.get(on).context("host not described")?;
        container::check_hello(hello, &host.kernel)
    }

    fn evacuate(&mut self, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation {
        let moved = match self.method(case) {
            Strategy::Postcopy => self.sessions().and_then(|sessions| {
                let moved = super::post_copy::evacuate(&sessions, lab, case, progress)?;
                self.guest_on = Some(lab.destination.index);
                Ok(moved)
            }),
            _ => self.try_evacuate(lab, case, progress),
        };
        moved.unwrap_or_else(|reason| Evacuation::failed(reason, self.running_on_source()))
    }

    fn running_on_source(&self) -> bool {
        let (Ok(sessions), Some(on)) = (self.sessions(), self.guest_on) else {
            return false;
        };
        matches!(
            sessions[on as usize].ask(Ask::Running, ANSWER_TIMEOUT),
            Ok(Reply::Running(true))
        )
    }

    fn adopt_moved_guest(&mut self, lab: &Lab) -> Result<()> {
        anyhow::ensure!(
            self.guest_on == Some(lab.source.index),
            "the container does not run on host {}, the new source",
            lab.source.name
        );
        Ok(())
    }

    /// Each host's container and CRIU processes, as its session counts them.
    fn sample_source(&self, lab: &Lab) -> Result<Source> {
        let sessions = self.sessions().map_err(|e| anyhow!(e))?;
        let order = [lab.source.index, lab.destination.index];
        Ok(Source::Reported(Box::new(move || {
            order.map(|i| {
                let asked = Instant::now();
                match sessions[i as usize].ask(Ask::Sample, SAMPLE_TIMEOUT) {
                    Ok(Reply::Sampled { cpu_ns, rss_kib }) => Some(Reported {
                        cpu_ns,
                        rss_mib: Some(rss_kib as f64 / 1024.0),
                        asked,
                        at: Instant::now(),
                    }),
                    _ => None,
                }
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(dirty_tracking: Result<(), String>) -> Description {
        Description {
            kernel: "6.1.0-50-amd64".into(),
            criu: Ok(CriuOnHost {
                version: "3.17.1".into(),
                origin: "system criu".into(),
                dirty_tracking,
                lazy_pages: Ok(()),
            }),
        }
    }

    #[test]
    fn pre_copy_is_refused_where_the_kernel_tracks_no_dirty_pages() {
        let untracked = described(Err("mem_dirty_track is not supported".into()));
        let why = criu_refusal("a", &untracked, Strategy::Precopy).unwrap();
        assert!(why.contains("host a's kernel 6.1.0-50-amd64"), "{why}");
        assert!(why.contains("stop-and-copy"), "{why}");
        assert_eq!(criu_refusal("a", &untracked, Strategy::StopAndCopy), None);
        assert_eq!(
            criu_refusal("a", &described(Ok(())), Strategy::Precopy),
            None
        );
    }

    #[test]
    fn pre_copy_becomes_post_copy_where_a_kernel_tracks_no_dirty_pages() {
        let hosts = |b: Description| vec![("a".to_string(), described(Ok(()))), ("b".into(), b)];
        let tracked = hosts(described(Ok(())));
        assert_eq!(
            live_method(Strategy::Precopy, &tracked),
            (Strategy::Precopy, None)
        );
        let untracked = hosts(described(Err("no soft-dirty".into())));
        let (method, why) = live_method(Strategy::Precopy, &untracked);
        assert_eq!(method, Strategy::Postcopy);
        assert!(why.unwrap().contains(
            "host b's kernel tracks no dirty pages for CRIU's pre-dumps (no soft-dirty)"
        ));
        // Asked for by name, stop-and-copy stays.
        assert_eq!(
            live_method(Strategy::StopAndCopy, &untracked),
            (Strategy::StopAndCopy, None)
        );
        // Where lazy pages fail too, pre-copy stays, to be refused with why.
        let mut neither = described(Err("no soft-dirty".into()));
        if let Ok(c) = &mut neither.criu {
            c.lazy_pages = Err("no userfaultfd".into());
        }
        assert_eq!(
            live_method(Strategy::Precopy, &hosts(neither)),
            (Strategy::Precopy, None)
        );
    }

    #[test]
    fn post_copy_is_refused_where_criu_cannot_serve_lazy_pages() {
        let mut d = described(Ok(()));
        assert_eq!(criu_refusal("a", &d, Strategy::Postcopy), None);
        if let Ok(c) = &mut d.criu {
            c.lazy_pages = Err("no userfaultfd".into());
        }
        let why = criu_refusal("a", &d, Strategy::Postcopy).unwrap();
        assert!(why.contains("host a cannot serve or pull"), "{why}");
        assert!(why.contains("no userfaultfd"), "{why}");
    }

    #[test]
    fn a_host_without_criu_is_refused_with_why() {
        let d = Description {
            kernel: "6.1.0".into(),
            criu: Err("openvz: no usable CRIU".into()),
        };
        let why = criu_refusal("b", &d, Strategy::StopAndCopy).unwrap();
        assert!(why.starts_with("host b has no usable CRIU"), "{why}");
    }

    #[test]
    fn versions_name_each_version_once_with_its_hosts() {
        let c = CriuOnHost {
            version: "3.17.1".into(),
            origin: "system criu".into(),
            dirty_tracking: Ok(()),
            lazy_pages: Ok(()),
        };
        assert_eq!(
            versions(&[("a".into(), &c), ("b".into(), &c)]),
            "CRIU 3.17.1 (system criu) on host a and b"
        );
    }
}
