//! Runs one case: lab up and calibrated, guest provisioned, then per repeat
//! steady state, warned failure, evacuation (back and forth between the two
//! hosts), settling; teardown. Produces
//! measurements only; judging and reporting happen downstream.

use crate::backend::{self, Backend, BackendInfo};
use crate::case::{Case, Tier};
use crate::failure::FailureMonitor;
use crate::host_agent::probe;
use crate::inventory::Inventory;
use crate::lab::libvirtd;
use crate::lab::netns;
use crate::lab::{self, Lab, Place};
use crate::lab::{calibration, link};
use crate::measure::{
    Calibration, CaseResult, Machine, Outcome, Pass, ProgressSample, Provenance, RealHost,
    RunMeasurement, Timeline, Unit, MIB,
};
use crate::metrics::GUEST_DOWNTIME;
use crate::neighbours::{Census, Neighbours};
use crate::observer::{longest_gap_ms, Observer};
use crate::sampler::Sampler;
use crate::wire;
use anyhow::Result;
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
/// The least share of a migration's bytes that a real lab's source sends
/// on its migration interface: frames carry more than their payload, and
/// the interface counts others' traffic too, so only a stream that went
/// another way shows less.
const REAL_NETWORK_SHARE: f64 = 0.9;

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

/// What produced a case's figures: the lab and its machine, what the
/// backend ran (`info`), the guest's own report (`hello`), and what ran
/// beside it.
fn provenance(
    lab: &Lab,
    info: BackendInfo,
    hello: &BTreeMap<String, String>,
    beside: Neighbours,
) -> Provenance {
    // A real lab's hosts are not this machine: their CPUs, memory and
    // kernel are not the runner's to report.
    let this_machine = matches!(lab.source.place, Place::Simulated(_));
    let real_hosts: Vec<RealHost> = if this_machine {
        Vec::new()
    } else {
        // In the inventory's order, wherever the guest went.
        [lab.host(0), lab.host(1)]
            .map(|host| RealHost {
                name: host.name.clone(),
                machine: real_machine(lab, host),
            })
            .into()
    };
    let host_kind = if this_machine {
        format!(
            "local lab: 2 network-namespace hosts on one machine ({} CPUs)",
            num_cpus()
        )
    } else {
        let hosts: Vec<String> = real_hosts
            .iter()
            .map(|h| match &h.machine {
                Ok(machine) => format!("host {} {machine}", h.name),
                Err(e) => format!(
                    "host {} (its libvirt did not tell its machine: {e})",
                    h.name
                ),
            })
            .collect();
        format!("real lab: {}", hosts.join("; "))
    };
    Provenance {
        accel: info.accel,
        host_kind,
        lab: lab.inventory.describe(),
        storage: info.storage,
        hosts: format!("{} and {}", lab.host(0).name, lab.host(1).name),
        host_kernel: if this_machine {
            crate::sh::kernel_release()
        } else {
            real_kernels(lab)
        },
        hypervisor_version: info.hypervisor_version,
        toolstack_version: info.toolstack_version,
        guest_kernel: hello.get("kernel").cloned().unwrap_or_default(),
        migsuite_version: env!("CARGO_PKG_VERSION").to_string(),
        beside,
        host_cpus: this_machine.then(|| num_cpus() as u32),
        host_memory_mib: crate::procfs::meminfo_mib("MemTotal").filter(|_| this_machine),
        real_hosts,
    }
}

/// Each real host's kernel release as its agent tells it (libvirt does
/// not), in the inventory's order: "host a 6.1.0-50-amd64; host b ...".
fn real_kernels(lab: &Lab) -> String {
    let agents = lab.agents();
    let told = |host: &crate::lab::Host| -> Result<String> {
        let agents = agents.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        probe::ask::kernel(agents, &host.peer())
    };
    [lab.host(0), lab.host(1)]
        .map(|host| match told(host) {
            Ok(kernel) => format!("host {} {kernel}", host.name),
            Err(e) => format!("host {} not told ({e:#})", host.name),
        })
        .join("; ")
}

/// A real host's machine as its libvirt tells (`lab::capabilities::machine`), so that
/// figures and baselines say what they were measured on.
fn real_machine(lab: &Lab, host: &crate::lab::Host) -> Result<Machine, String> {
    lab.connect(&host.uri)
        .and_then(|conn| {
            let capabilities = conn.capabilities().ok();
            Ok(crate::lab::capabilities::machine(
                &conn,
                capabilities.as_deref(),
            )?)
        })
        .map_err(|e| format!("{e:#}"))
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

/// One measured migration of the running guest, from the lab's source.
fn run_once(
    lab: &Lab,
    case: &Case,
    backend: &mut dyn Backend,
    observer: &Observer,
    wire_mbit: Option<f64>,
    path_rate_mbit: Option<f64>,
    progress: &dyn Fn(&str),
) -> Result<RunMeasurement> {
    // One host (a Xen domU moved within it): both ends are the source.
    let from = &lab.source.name;
    let to = if backend.stream_crosses_link() {
        &lab.destination.name
    } else {
        from
    };
    let direction = format!("{from}->{to}");
    let monitor = FailureMonitor::start(lab, ANSWER_TIMEOUT)?;
    // A real lab's source counts what its migration interface sent, asked
    // of its agent now and after the evacuation, not between the warning
    // and the evacuation, which it would delay.
    let real_counted = match (&lab.source.place, backend.stream_crosses_link()) {
        (Place::Real, true) => Some(probe::ask::counters(monitor.agents(), &lab.source.peer())?),
        _ => None,
    };
    // A real host's CPUs bound the rates its reports can give.
    let host_cpus = [&lab.source, &lab.destination].map(|h| match h.place {
        Place::Real => real_machine(lab, h).ok().map(|m| m.cpus),
        Place::Simulated(_) => None,
    });
    let sampling_from = Instant::now();
    let sampler = Sampler::start(
        Duration::from_millis(case.sampling.interval_ms),
        backend.sample_source(lab)?,
        host_cpus,
    );
    std::thread::sleep(Duration::from_millis(case.failure.after_ms));
    let run = (|| -> Result<RunMeasurement> {
        let warning = monitor.inject(ANSWER_TIMEOUT)?;
        let t0 = warning.heard_at;
        progress(&format!(
            "{}: host {} warned it is going down (heartbeat {}, in answer to order {}; the \
             run's first order {}); evacuating {}",
            case.name(),
            lab.source.name,
            warning.seq.going_down,
            warning.seq.answered_order,
            warning.seq.first_order,
            if from == to {
                format!("within host {to} (one-host topology)")
            } else {
                format!("to {to}")
            }
        ));
        if !warning.ignored_from.is_empty() {
            let from: Vec<String> = warning.ignored_from.iter().map(|a| a.to_string()).collect();
            progress(&format!(
                "{}: the failure monitor ignored unauthenticated datagrams from {} (only host {}'s \
                 agent, sealing with the lab's key, is heeded)",
                case.name(),
                from.join(", "),
                lab.source.name,
            ));
        }

        let crosses_link = backend.stream_crosses_link();
        // A simulated link's counters, sampled through the evacuation.
        let tx_sampler = match &lab.source.place {
            Place::Simulated(s) => Some(link::TxSampler::start(&s.netns.name)?),
            Place::Real => None,
        };
        let evacuation = backend.evacuate(lab, case, progress);
        let on_link = tx_sampler.map(link::TxSampler::finish).transpose()?;
        let on_network = real_counted
            .map(|before| -> Result<_> {
                let after = probe::ask::counters(monitor.agents(), &lab.source.peer())?;
                Ok((after.counters.since(before.counters).tx, after.interface))
            })
            .transpose()?;
        let link_bytes = on_link
            .as_ref()
            .map(|l| l.bytes())
            .or(on_network.as_ref().map(|(bytes, _)| *bytes));
        let mut outcome = evacuation.outcome;
        // A stream that should cross the link and left it idle went elsewhere:
        // what was measured is not what the case asked for.
        if let (Outcome::Completed, true, Some(sent)) =
            (&outcome, crosses_link, evacuation.bytes_transferred)
        {
            let elsewhere = match (&on_link, &on_network) {
                (Some(on_link), _) => went_elsewhere(
                    on_link.bytes(),
                    sent,
                    0.5,
                    "did not cross the migration link",
                    &format!("on {}", crate::lab::network::LINK_DEV),
                ),
                (None, Some((bytes, interface))) => went_elsewhere(
                    *bytes,
                    sent,
                    REAL_NETWORK_SHARE,
                    "did not take the migration network",
                    &format!("sent from {} on {interface}", lab.source.migration_address),
                ),
                (None, None) => None,
            };
            if let Some(reason) = elsewhere {
                outcome = Outcome::Failed {
                    reason,
                    source_survived: false,
                };
            }
        }
        let ended = Instant::now();
        // The guest must be heard again: from the destination after a
        // migration, from the source after a failed one.
        let wait = resume_wait(
            ended,
            observer.last_heartbeat().map(|(t, _)| t),
            case.bounds.limits.get(GUEST_DOWNTIME).copied(),
        );
        let heard_again = observer.heartbeat_after(ended, wait);
        match &mut outcome {
            Outcome::Failed {
                source_survived, ..
            }
            | Outcome::NotConverged {
                source_survived, ..
            } => *source_survived &= heard_again,
            Outcome::Completed if !heard_again => {
                outcome = Outcome::Failed {
                    reason: "the guest was not heard from after the migration".into(),
                    source_survived: false,
                }
            }
            Outcome::Completed => {}
        }
        std::thread::sleep(Duration::from_millis(case.sampling.settle_ms));
        let mut timelines = sampler.finish(t0);
        let on_link = on_link.filter(|_| crosses_link);
        if let Some(on_link) = &on_link {
            timelines.push(Timeline {
                name: "link.source.tx".into(),
                unit: Unit::Mbit,
                points: on_link.rate_timeline(t0, Duration::from_millis(case.sampling.interval_ms)),
            });
        }
        let beats = observer.heartbeats_since(sampling_from);
        if let (Outcome::Completed, Some((_, last))) = (&outcome, beats.last()) {
            if last.memory_errors > 0 {
                outcome = Outcome::Failed {
                    reason: format!(
                        "the guest found {} pages not holding what it wrote",
                        last.memory_errors
                    ),
                    source_survived: false,
                };
            }
        }
        let peak = |prefix: &str, timelines: &[Timeline]| -> Option<f64> {
            timelines
                .iter()
                .filter(|t| t.name.starts_with(prefix) && t.name.ends_with(".hypervisor"))
                .flat_map(|t| t.points.iter().filter(|(ms, _)| *ms >= 0).map(|(_, v)| *v))
                .reduce(f64::max)
        };
        let completed = matches!(outcome, Outcome::Completed);
        let throughput_mbit = if let Some(on_link) = &on_link {
            on_link.active_rate_mbit()
        } else {
            evacuation
                .bytes_transferred
                .zip(evacuation.stream_ms)
                .filter(|(_, ms)| *ms > 0.0)
                .map(|(bytes, ms)| bytes as f64 * 8.0 / ms / 1000.0)
        }
        .filter(|_| completed);
        let since_t0 = |at: Instant| at.saturating_duration_since(t0).as_millis() as i64;
        let progress_samples: Vec<ProgressSample> = evacuation
            .progress
            .iter()
            .map(|p| ProgressSample {
                t_ms: since_t0(p.at),
                transferred_mib: p.transferred_bytes as f64 / MIB,
                remaining_mib: p.remaining_bytes as f64 / MIB,
                pass: p.pass,
                dirty_rate_mib_s: p.dirty_bytes_s.map(|b| b as f64 / MIB),
                throughput_mbit: p.bytes_s.map(|b| b as f64 * 8.0 / 1e6),
                expected_downtime_ms: p.expected_downtime_ms.map(|ms| ms as f64),
            })
            .collect();
        Ok(RunMeasurement {
            direction,
            // Named by the caller, which knows the case's variants.
            variant: None,
            total_time_ms: evacuation
                .completed_at
                .filter(|_| completed)
                .map(|t| (t - t0).as_secs_f64() * 1000.0),
            reported_total_ms: evacuation.reported_total_ms,
            reported_downtime_ms: evacuation.reported_downtime_ms,
            downtime_limit_ms: evacuation.downtime_limit_ms,
            guest_downtime_ms: longest_gap_ms(&beats, t0, Instant::now()),
            baseline_gap_ms: longest_gap_ms(&beats, sampling_from, t0),
            setup_time_ms: evacuation.setup_time_ms,
            bytes_transferred: evacuation.bytes_transferred,
            memory_iterations: evacuation.memory_iterations,
            peak_cpu_pct: peak("cpu.", &timelines),
            peak_memory_mib: peak("memory.", &timelines),
            phases: evacuation.phases,
            throughput_mbit,
            link_bytes,
            efficiency: throughput_mbit
                .filter(|_| on_link.is_some())
                .zip(wire_mbit)
                .map(|(t, wire)| t / wire),
            path_rate_mbit,
            // Named by the caller, which measured it.
            cpu_pace_mops: None,
            passes: Pass::of(&progress_samples),
            progress: progress_samples,
            outcome,
            timelines,
            warning_seq: Some(warning.seq),
        })
    })();
    // The order to go down stands until another, even after a failed run
    // or an unheard warning: the source host is put back up for the next.
    match (run, monitor.stand_up(ANSWER_TIMEOUT)) {
        (run, Ok(())) => run,
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(up)) => {
            progress(&format!("{}: {up:#}", case.name()));
            Err(e)
        }
    }
}

/// How long to wait, from the end of a migration, for the guest to be
/// heard again: `RESUME_HEARTBEAT_TIMEOUT`, or longer when the suite's bound
/// on the guest-observed downtime allows a longer silence since the guest
/// was `last_heard` (a guest slower to come back than that fails its bound
/// anyway; one within it is no lost guest).
fn resume_wait(ended: Instant, last_heard: Option<Instant>, bound_ms: Option<f64>) -> Duration {
    let allowed = last_heard.zip(bound_ms).map(|(heard, ms)| {
        (heard + Duration::from_secs_f64(ms / 1000.0)).saturating_duration_since(ended)
    });
    allowed.map_or(RESUME_HEARTBEAT_TIMEOUT, |a| {
        a.max(RESUME_HEARTBEAT_TIMEOUT)
    })
}

/// Why a stream that transferred `sent` bytes went elsewhere than the
/// migration network, whose counter saw `counted` bytes (`where_` it
/// counted them), fewer than `share` of them; None if it took it.
fn went_elsewhere(
    counted: u64,
    sent: u64,
    share: f64,
    missed: &str,
    where_: &str,
) -> Option<String> {
    ((counted as f64) < share * sent as f64).then(|| {
        format!(
            "the migration stream {missed}: {:.1} MiB {where_} for {:.1} MiB transferred",
            counted as f64 / MIB,
            sent as f64 / MIB
        )
    })
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{DirtyRate, Hypervisor};
    use crate::inventory::Storage;
    use crate::report::fixtures::case;

    #[test]
    fn the_guest_is_awaited_as_long_as_its_bound_allows_it_to_be_silent() {
        let ended = Instant::now();
        let heard = ended - Duration::from_secs(30);
        // No bound, or one already used up: the least wait.
        assert_eq!(
            resume_wait(ended, Some(heard), None),
            RESUME_HEARTBEAT_TIMEOUT
        );
        assert_eq!(
            resume_wait(ended, Some(heard), Some(20_000.0)),
            RESUME_HEARTBEAT_TIMEOUT
        );
        assert_eq!(
            resume_wait(ended, None, Some(180_000.0)),
            RESUME_HEARTBEAT_TIMEOUT
        );
        // 180 s of silence allowed, 30 s of it gone.
        assert_eq!(
            resume_wait(ended, Some(heard), Some(180_000.0)),
            Duration::from_secs(150)
        );
    }

    #[test]
    fn a_stream_that_left_the_migration_network_idle_went_elsewhere() {
        let mib = 1 << 20;
        let missed = "did not take the migration network";
        let on = "sent from 198.51.100.1 on ens5";
        assert_eq!(
            went_elsewhere(mib, 100 * mib, REAL_NETWORK_SHARE, missed, on).unwrap(),
            "the migration stream did not take the migration network: 1.0 MiB sent from \
             198.51.100.1 on ens5 for 100.0 MiB transferred"
        );
        // Headers and other traffic make more, never less.
        assert_eq!(
            went_elsewhere(104 * mib, 100 * mib, REAL_NETWORK_SHARE, missed, on),
            None
        );
        assert!(went_elsewhere(89 * mib, 100 * mib, REAL_NETWORK_SHARE, missed, on).is_some());
    }

    #[test]
    fn a_case_runs_only_where_a_pair_offers_its_hypervisor() {
        let lab = Inventory::simulated("local", Storage::Local);
        assert_eq!(refusal(&case(), &lab), None);
        let mut kvm_only = lab.clone();
        for host in &mut kvm_only.hosts {
            host.backends = vec![Hypervisor::KvmPv];
        }
        let why = refusal(&case(), &kvm_only).unwrap();
        assert!(why.contains("no pair of lab local offers kvm-fv"), "{why}");
    }

    /// A real lab's network is as its hosts have it: the case must fit it.
    /// Its hosts' agents measure it, so a share of it fits.
    #[test]
    fn a_real_lab_runs_cases_that_fit_its_network() {
        let mut real = Inventory::simulated("rack", Storage::Local);
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
