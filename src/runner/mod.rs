//! Runs one case: lab up and calibrated, guest provisioned, then per repeat
//! steady state, warned failure, evacuation (back and forth between the two
//! hosts), settling; teardown. Produces
//! measurements only; judging and reporting happen downstream.

mod provenance;
mod run;

use crate::backend::{self, Backend};
use crate::case::{Case, LinkSpec, Tier};
use crate::host_agent::probe;
use crate::inventory::Inventory;
use crate::lab::calibration;
use crate::lab::libvirtd;
use crate::lab::netns;
use crate::lab::{self, Lab, Place};
use crate::measure::{Calibration, CaseResult, Outcome, RunMeasurement};
use crate::neighbours::Census;
use crate::observer::Observer;
use crate::wire;
use anyhow::Result;
use provenance::provenance;
use run::run_once;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Catches a guest that will never boot, not a slow one: under TCG inside
/// a nested host (the stand-in lab) on a loaded machine, a boot takes
/// minutes (the closing notes give the figures).
const BOOT_TIMEOUT: Duration = Duration::from_secs(360);
/// How long a host's agent may take to answer an order (to go down, to stay
/// up).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may stay silent after its migration ended, on either
/// host, at least (see `resume_wait`).
const RESUME_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a case could not be measured at all (as opposed to a measured
/// migration that failed, which is a verdict).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0:#}")]
    Lab(#[from] anyhow::Error),
}

/// Measured cases never overlap on a pair: one case per pair at a time,
/// whatever the number of test threads or processes, or, on a real lab,
/// of runners on other machines.
pub struct Exclusive {
    /// Which of the lab's pairs is ours.
    pub pair: usize,
    _holds: lab::hold::Holds,
    _lock: lab::root::LabLock,
}

/// How long a pair whose hosts a runner elsewhere holds is left before it
/// is asked again (each ask is a connection to its hosts).
const HELD_ELSEWHERE_RETRY: Duration = Duration::from_secs(5);

/// Waits for a free pair among `pairs` (indices into the pairs of
/// `inventory`).
pub fn exclusive(
    inventory: &Inventory,
    pairs: &[usize],
    progress: &dyn Fn(&str),
) -> Result<Exclusive> {
    let mut held_elsewhere: BTreeMap<usize, (Instant, String)> = BTreeMap::new();
    let mut hold = |pair: usize| -> Result<lab::root::Hold<lab::hold::Holds>> {
        if inventory.simulated {
            return Ok(Ok(lab::hold::Holds::none()));
        }
        if let Some((asked, who)) = held_elsewhere.get(&pair) {
            if asked.elapsed() < HELD_ELSEWHERE_RETRY {
                return Ok(Err(who.clone()));
            }
        }
        let held = lab::hold::Holds::take(inventory, pair)?;
        match &held {
            // Nobody else runs on the pair now: what is there of a run
            // that is gone is left over.
            Ok(_) => lab::leftovers::remove(inventory, pair)?,
            Err(who) => {
                held_elsewhere.insert(pair, (Instant::now(), who.clone()));
            }
        }
        Ok(held)
    };
    let (pair, lock, holds) = lab::root::lock(pairs, &mut hold, progress)?;
    Ok(Exclusive {
        pair,
        _holds: holds,
        _lock: lock,
    })
}

/// Why `case` cannot run on the lab `inventory` describes; None if it can.
pub fn refusal(case: &Case, inventory: &Inventory) -> Option<String> {
    lab::cannot_run(inventory, case).or_else(|| {
        inventory
            .pairs_offering(case.hypervisor)
            .is_empty()
            .then(|| {
                format!(
                    "no pair of lab {} offers {} (the `backends` both hosts of a pair list)",
                    inventory.name, case.hypervisor
                )
            })
    })
}

/// Why plain `cargo test` leaves `case` out on `lab` (lists it as ignored);
/// None if it runs it. A `tier: lab` suite runs on demand, unless the lab's
/// inventory names it in its `gate`: a real lab refuses the gate-tier
/// suites' cases, and its gate is one made to fit it.
pub fn left_out(case: &Case, lab: &Inventory) -> Option<String> {
    if let Some(why) = refusal(case, lab) {
        return Some(format!("refused: {why}"));
    }
    let gated = lab.gate.contains(&case.suite);
    (case.tier == Tier::Lab && !gated).then(|| {
        format!(
            "on demand: suite {} is `tier: lab`, and not in lab {}'s `gate`",
            case.suite, lab.name
        )
    })
}

/// Why plain `cargo test` on `lab` would measure nothing, as each suite's
/// distinct reasons with how many cases each left out; None if it runs a
/// case of `cases`. A lab on which it would pass having measured nothing
/// fails instead.
pub fn measures_nothing(cases: &[Case], lab: &Inventory) -> Option<String> {
    let mut suites: Vec<(&str, Vec<(String, usize)>)> = Vec::new();
    for case in cases {
        let why = left_out(case, lab)?;
        let at = match suites.iter().position(|(s, _)| *s == case.suite) {
            Some(at) => at,
            None => {
                suites.push((&case.suite, Vec::new()));
                suites.len() - 1
            }
        };
        let reasons = &mut suites[at].1;
        match reasons.iter_mut().find(|(r, _)| *r == why) {
            Some((_, count)) => *count += 1,
            None => reasons.push((why, 1)),
        }
    }
    let mut message = format!(
        "`cargo test` would measure nothing on {}: it leaves out every case",
        lab.describe()
    );
    for (suite, reasons) in suites {
        let cases: usize = reasons.iter().map(|(_, count)| count).sum();
        message += &format!("\n  suite {suite}, {cases} case(s):");
        for (why, count) in reasons {
            message += &format!("\n    {count} × {why}");
        }
    }
    message += "\nName the suites that gate this lab in its inventory, e.g. `gate: [real-lab]` \
                (plain `cargo test` runs their cases there, `tier: lab` or not), or fix the lab \
                so that its cases fit it.";
    Some(message)
}

/// Runs `case` on the lab `inventory` describes, on the first free pair
/// that offers its hypervisor.
pub fn run_case(
    case: &Case,
    inventory: &Inventory,
    progress: &dyn Fn(&str),
) -> Result<CaseResult, RunError> {
    if let Some(why) = refusal(case, inventory) {
        return Err(RunError::Refused(why));
    }
    let exclusive = exclusive(
        inventory,
        &inventory.pairs_offering(case.hypervisor),
        progress,
    )?;
    let started = std::time::SystemTime::now();
    let mut backend =
        backend::for_hypervisor(case, inventory).map_err(|e| RunError::Lab(anyhow::anyhow!(e)))?;
    // Each variant's migration too: a variant may ask what the host lacks.
    let refusal = std::iter::once(case.clone())
        .chain((0..case.variants.len()).map(|v| case.as_variant(v)))
        .find_map(|c| backend.host_refusal(&c));
    if let Some(why) = refusal {
        return Err(RunError::Refused(why));
    }
    backend::release_unneeded(case, exclusive.pair);
    let mut lab = Lab::start(&case.link, inventory, exclusive.pair)?;
    let result = run_in(&mut lab, case, backend.as_mut(), progress);
    let logs = logs_dir(case);
    match lab.save_logs(&logs) {
        Ok(()) => progress(&format!("{}: logs in {}", case.name(), logs.display())),
        Err(e) => progress(&format!(
            "{}: cannot save the lab's logs to {}: {e:#}",
            case.name(),
            logs.display()
        )),
    }
    // The guest goes before its lab.
    drop(backend);
    drop(lab);
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    Ok(CaseResult {
        held_unix_ms: Some([unix_ms(started), unix_ms(std::time::SystemTime::now())]),
        ..result?
    })
}

fn summary_line(run: &RunMeasurement) -> String {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    match &run.outcome {
        Outcome::Completed => format!(
            "total {}, downtime {} (guest saw {}), {:.0} Mbit/s{}{}",
            ms(run.total_time_ms),
            ms(run.reported_downtime_ms),
            ms(run.guest_downtime_ms),
            run.throughput_mbit.unwrap_or(f64::NAN),
            run.path_rate_mbit
                .map(|p| format!(" on a path carrying {p:.0} Mbit/s before the run"))
                .unwrap_or_default(),
            run.cpu_pace_mops
                .map(|c| format!(", CPUs at {c:.0} Mop/s"))
                .unwrap_or_default(),
        ),
        Outcome::NotConverged { evidence, .. } => format!("NOT CONVERGED: {evidence}"),
        Outcome::Failed {
            reason,
            source_survived,
        } => {
            format!(
                "FAILED: {reason} (source guest {})",
                if *source_survived {
                    "still running"
                } else {
                    "lost"
                }
            )
        }
    }
}

/// libvirtd's TCP port (no authentication in a simulated lab) on every
/// address of the hosts migsuite knows: the agent checks that none is
/// reachable from the guest. IPv4 only, as the guest is.
fn probe_targets(lab: &Lab) -> Vec<String> {
    [&lab.source, &lab.destination]
        .iter()
        .flat_map(|h| control_addresses(h))
        .filter(IpAddr::is_ipv4)
        .map(|addr| SocketAddr::from((addr, libvirtd::LIBVIRTD_PORT)).to_string())
        .collect()
}

/// A simulated host's management and link addresses; a real host's
/// agent and migration addresses, and its URI's host where that is an
/// address.
fn control_addresses(host: &lab::Host) -> Vec<IpAddr> {
    match &host.place {
        Place::Simulated(s) => vec![s.libvirtd.addr.into(), host.migration_address],
        Place::Real => {
            let mut addresses = vec![host.agent, host.migration_address];
            addresses.extend(host.uri_address().filter(|a| !addresses.contains(a)));
            addresses
        }
    }
}

fn agent_args(lab: &Lab, case: &Case, dirty_rate_mib_s: u32) -> String {
    let w = &case.workload;
    let probe = probe_targets(lab);
    let lab = &lab.inventory;
    let (guest, prefix_len) = lab.guest;
    format!(
        "migsuite.ip={guest}/{prefix_len} migsuite.observer={}:{} migsuite.mtu={} \
         migsuite.dirty_mib={} migsuite.dirty_rate={} migsuite.pkt_size={} migsuite.pkt_rate={} \
         migsuite.probe={} migsuite.monitor={}",
        lab.observer,
        wire::OBSERVER_PORT,
        case.link.mtu,
        w.dirty_mib,
        dirty_rate_mib_s,
        w.packet_size.payload(case.link.mtu),
        w.packet_rate_pps,
        probe.join(","),
        SocketAddr::from((lab.monitor, wire::MONITOR_PORT)),
    )
}

/// Where the lab's logs of a case are kept: `target/migsuite/logs/<case>`.
pub fn logs_dir(case: &Case) -> std::path::PathBuf {
    std::path::PathBuf::from("target/migsuite/logs").join(case.slug())
}

/// One lab and one booted guest for every repeat: the lab measures its
/// link, the guest boots on host a, and each run migrates it to the other
/// host (a->b, b->a, ...).
fn run_in(
    lab: &mut Lab,
    case: &Case,
    backend: &mut dyn Backend,
    progress: &dyn Fn(&str),
) -> Result<CaseResult> {
    backend.prepare(lab, case)?;
    let link = calibration::link_rates(lab)?;
    let back = calibration::return_rates(lab)?;
    let stream_path_goodput_mbit = backend.stream_path_goodput(lab).transpose()?;
    // The runs go both ways: the workload fits the way that carries less.
    let link_mbit = back
        .as_ref()
        .map_or(link.goodput_mbit, |b| b.goodput_mbit.min(link.goodput_mbit));
    let dirty_rate = case
        .workload
        .dirty_rate
        .mib_s(carried(link_mbit, stream_path_goodput_mbit));
    let carries = match &back {
        None => format!(
            "the migration link carries {:.0} Mbit/s of TCP payload ({:.0} Mbit/s on the wire) at MTU {}",
            link.goodput_mbit, link.wire_mbit, case.link.mtu,
        ),
        Some(back) => format!(
            "lab {}'s migration network (MTU {}, not shaped by migsuite) carries {:.0} Mbit/s of \
             TCP payload ({:.0} Mbit/s on the wire) from {} to {} and {:.0} ({:.0}) back, as \
             the hosts' agents measured",
            lab.inventory.name,
            case.link.mtu,
            link.goodput_mbit,
            link.wire_mbit,
            lab.source.name,
            lab.destination.name,
            back.goodput_mbit,
            back.wire_mbit,
        ),
    };
    let stream_path = stream_path_goodput_mbit
        .map(|p| format!(", the stream's own path host to host {p:.0} Mbit/s"))
        .unwrap_or_default();
    progress(&format!(
        "{}: {carries}{stream_path}; the workload dirties {} MiB at {dirty_rate} MiB/s",
        case.name(),
        case.workload.dirty_mib
    ));
    let observer = Observer::start(lab)?;
    backend.provision(lab, case, &agent_args(lab, case, dirty_rate))?;
    // A real host's guest console is a pty there (`kvm::domain`).
    let console = lab.shared_dir().join("console.log");
    let console = lab.inventory.simulated.then_some(console.as_path());
    let hello = observer.wait_hello(BOOT_TIMEOUT, console)?;
    backend.check_guest(&hello)?;
    match hello.get("control_plane_reached").map(String::as_str) {
        Some("none") => progress(&format!(
            "{}: from the guest, no host's libvirtd answered ({})",
            case.name(),
            probe_targets(lab).join(", ")
        )),
        reached => anyhow::bail!(
            "the guest reached the lab's control plane (libvirtd without authentication): {}",
            reached.unwrap_or("the agent did not say (an older agent?)")
        ),
    }
    let info = backend.info().clone();
    let wire_mbit = Some(link.wire_mbit);
    let calibration = Calibration {
        mtu: case.link.mtu,
        goodput_mbit: Some(link.goodput_mbit),
        wire_mbit,
        return_goodput_mbit: back.as_ref().map(|b| b.goodput_mbit),
        return_wire_mbit: back.as_ref().map(|b| b.wire_mbit),
        stream_path_goodput_mbit,
        workload_dirty_rate_mib_s: dirty_rate,
        guest_dirty_capacity_mib_s: hello
            .get("dirty_capacity_mib_s")
            .and_then(|v| v.parse().ok()),
    };
    progress(&format!(
        "{}: guest up ({}, {})",
        case.name(),
        info.accel,
        info.hypervisor_version
    ));
    // Looked at between runs only: a look costs CPU the runs would miss.
    let mut census = Census::take();
    let mut runs = Vec::new();
    // Each run with its variant, if the case has any.
    let order: Vec<Option<usize>> = match case.variant_order() {
        order if order.is_empty() => vec![None; case.repeat as usize],
        order => order.into_iter().map(Some).collect(),
    };
    let total = order.len();
    for (i, variant) in (1..).zip(order) {
        let (as_run, named) = match variant {
            Some(v) => (case.as_variant(v), format!(" ({})", case.variants[v].name)),
            None => (case.clone(), String::new()),
        };
        progress(&format!(
            "{}: run {i}/{total}{named}: steady state for {} ms",
            case.name(),
            case.failure.after_ms
        ));
        let path_rate_mbit = path_rate(lab, backend)?;
        let cpu_pace_mops = cpu_pace(lab)?;
        let mut run = run_once(
            lab,
            &as_run,
            backend,
            &observer,
            wire_mbit,
            path_rate_mbit,
            progress,
        )?;
        run.variant = variant.map(|v| case.variants[v].name.clone());
        run.cpu_pace_mops = Some(cpu_pace_mops);
        progress(&format!(
            "{}: run {i}{named} ({}): {}",
            case.name(),
            run.direction,
            summary_line(&run)
        ));
        let moved = run.outcome == Outcome::Completed;
        let alive = match &run.outcome {
            Outcome::Completed => true,
            Outcome::NotConverged {
                source_survived, ..
            }
            | Outcome::Failed {
                source_survived, ..
            } => *source_survived,
        };
        runs.push(run);
        let (own, others) = lab_processes(lab);
        census.look(&own, &others);
        if !alive {
            progress(&format!(
                "{}: the guest was lost; no further runs",
                case.name()
            ));
            break;
        }
        if moved && i < total {
            // A guest moved within one host (one-host topology) stays on it.
            if backend.stream_crosses_link() {
                lab.swap_roles();
            }
            backend.adopt_moved_guest(lab)?;
        }
    }
    Ok(CaseResult {
        case: case.clone(),
        provenance: provenance(lab, info, &hello, {
            let (own, others) = lab_processes(lab);
            census.neighbours(&own, &others)
        }),
        calibration,
        runs,
        held_unix_ms: None,
    })
}

/// What the stream can carry: the link's goodput or, where the stream has
/// a path of its own (dom0's relays), that if it carries less.
fn carried(link_goodput_mbit: f64, own_path_mbit: Option<f64>) -> f64 {
    own_path_mbit.map_or(link_goodput_mbit, |n| n.min(link_goodput_mbit))
}

/// What the stream's path carries just before a run, measured again each
/// run with the guest running, as the runs are: the gate brings the case's
/// figures to the baseline's pace by the median of these (the case's
/// calibration, before the guest boots, overstates it where the guest's
/// host shares the path's CPUs, as nested Xen hosts do).
fn path_rate(lab: &Lab, backend: &dyn Backend) -> Result<Option<f64>> {
    if !backend.stream_crosses_link() {
        return Ok(None);
    }
    let link = calibration::link_rates(lab)?.goodput_mbit;
    let own_path = backend.stream_path_goodput(lab).transpose()?;
    Ok(Some(carried(link, own_path)))
}

/// The hosts' CPU pace just before a run, taken like the path's rate:
/// this machine's, whose namespaces a simulated lab's hosts are; on a real
/// lab the slower of its two hosts', as their agents measure it.
fn cpu_pace(lab: &Lab) -> Result<f64> {
    if lab.inventory.simulated {
        return Ok(crate::cpu_pace::measure());
    }
    let agents = lab.agents()?;
    let source = probe::ask::cpu_pace(&agents, &lab.source.peer())?;
    let destination = probe::ask::cpu_pace(&agents, &lab.destination.peer())?;
    Ok(source.min(destination))
}

/// The pids of `lab` (a simulated lab's namespaces' processes; a real
/// lab has none here), and those this process runs for other pairs: what
/// the census of its neighbours must not and must name.
fn lab_processes(lab: &Lab) -> (HashSet<i32>, HashSet<i32>) {
    let hosts = [&lab.source, &lab.destination].map(|h| h.simulated().ok().map(|s| &s.netns));
    let own = hosts
        .into_iter()
        .chain([lab.switch.as_ref()])
        .flatten()
        .flat_map(|ns| netns::processes(&ns.name))
        .collect();
    let others = lab::cleanup::other_labs_processes(lab.id())
        .into_iter()
        .chain(backend::kept_for_other_pairs(lab.pair))
        .collect();
    (own, others)
}

/// Runs `f` on each pair of `inventory` in turn, built (a simulated pair,
/// at MTU 1500, unshaped, and so held) or reached (a real one, held as a
/// case holds it if `hold`).
pub fn each_pair(
    inventory: &Inventory,
    hold: bool,
    mut f: impl FnMut(&Lab) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let link = LinkSpec {
        mtu: 1500,
        rate_mbit: None,
        offloads: false,
    };
    for pair in 0..inventory.pairs().count() {
        let _held = (hold || inventory.simulated)
            .then(|| exclusive(inventory, &[pair], &|m| eprintln!("{m}")))
            .transpose()?;
        f(&Lab::start(&link, inventory, pair)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{DirtyRate, Hypervisor};
    use crate::inventory::Storage;
    use crate::report::fixtures::case;

    #[test]
    fn a_case_runs_only_where_a_pair_offers_its_hypervisor() {
        let lab = Inventory::simulated("local", Storage::Local, &crate::backend::rows());
        assert_eq!(refusal(&case(), &lab), None);
        let mut kvm_only = lab.clone();
        for host in &mut kvm_only.hosts {
            host.backends = vec![Hypervisor::row("kvm-pv")];
        }
        let why = refusal(&case(), &kvm_only).unwrap();
        assert!(why.contains("no pair of lab local offers kvm-fv"), "{why}");
    }

    /// A real lab's network is as its hosts have it: the case must fit it.
    /// Its hosts' agents measure it, so a share of it fits.
    #[test]
    fn a_real_lab_runs_cases_that_fit_its_network() {
        let mut real = Inventory::simulated("rack", Storage::Local, &crate::backend::rows());
        (real.simulated, real.link_mtu) = (false, Some(1500));
        let mut fits = case();
        (fits.link.mtu, fits.link.rate_mbit, fits.link.offloads) = (1500, None, true);
        assert_eq!(refusal(&fits, &real), None);
        fits.workload.dirty_rate = DirtyRate::OfLink(0.25);
        assert_eq!(refusal(&fits, &real), None);
        let refused = |change: &dyn Fn(&mut Case)| {
            let mut c = fits.clone();
            change(&mut c);
            refusal(&c, &real).unwrap()
        };
        let why = refused(&|c| c.link.mtu = 128);
        assert!(
            why.contains("MTU 1500 (its inventory's `link_mtu`)"),
            "{why}"
        );
        let why = refused(&|c| c.link.offloads = false);
        assert!(why.contains("offloads off"), "{why}");
        let why = refused(&|c| c.link.rate_mbit = Some(1000));
        assert!(why.contains("does not shape a real lab's network"), "{why}");
        let why = refused(&|c| c.faults.kill_destination_after_ms = Some(500));
        assert!(why.contains("only on a simulated host"), "{why}");
    }
}
