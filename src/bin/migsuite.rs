//! migsuite: validate, list and run live-migration suites.

use clap::{Parser, Subcommand};
use migsuite::case::{Case, LinkSpec};
use migsuite::inventory::Inventory;
use migsuite::lab::{calibration, Lab};
use migsuite::report::{case_table, html, suite_tables, write_report, CaseReport, RunReport};
use migsuite::session::Session;
use migsuite::suite;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

#[derive(Parser)]
#[command(
    version,
    about = "Declarative, repeatable live-migration performance suites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check suites and report the first error with file:line:column.
    Validate {
        /// Suite files or directories of suites.
        #[arg(default_value = "suites")]
        paths: Vec<PathBuf>,
        /// A lab inventory (suites/labs/*.yaml) to check as well.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// List the cases the suites expand to, and which of them plain `cargo
    /// test` leaves out on the lab: refused there, or run on demand.
    List {
        #[arg(default_value = "suites")]
        paths: Vec<PathBuf>,
        /// The lab inventory; by default $MIGSUITE_LAB, else the built-in
        /// simulated pair; checked against the backends.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// Measure what the local lab's migration link carries at an MTU, beside
    /// a bare veth pair with the same settings (what a cable costs here); a
    /// real lab's network, both ways, as its hosts' agents measure it.
    Calibrate {
        /// A simulated link's MTU (a real lab's is its own).
        #[arg(long, default_value_t = 128)]
        mtu: u32,
        /// Token-bucket rate of a simulated link, Mbit/s; 0 = unshaped.
        #[arg(long, default_value_t = 1000)]
        rate_mbit: u64,
        /// The lab inventory whose first free pair is measured; by default
        /// $MIGSUITE_LAB, else the built-in simulated pair.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// Run the cases on the local lab, print the tables, write a JSON report
    /// and its HTML page beside it.
    Run {
        #[arg(default_value = "suites")]
        paths: Vec<PathBuf>,
        /// Only cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Runs per case instead of the suites' `repeat` (1 to 100), e.g. a
        /// quicker pass over a long lab-tier suite; by default
        /// $MIGSUITE_REPEAT, else the suites'.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(migsuite::suite::MAX_REPEAT)))]
        repeat: Option<u32>,
        /// Where the JSON report of each suite goes.
        #[arg(long, default_value = "target/migsuite/reports")]
        report_dir: PathBuf,
        /// The lab inventory to run on (suites/labs/*.yaml); by default
        /// $MIGSUITE_LAB, else the built-in simulated pair.
        #[arg(long)]
        lab: Option<PathBuf>,
        /// Propose each case's figures as its baseline: snapshots/<case>.snap.new
        /// (`@<lab>` on an inventory's lab), for `cargo insta review`.
        #[arg(long)]
        record: bool,
    },
    /// Merge the JSON reports of runs that measured a suite's cases apart
    /// (nextest partitions, one process per case) into one report per
    /// suite, with its table and HTML page.
    Merge {
        /// Reports, or directories of them (e.g. target/migsuite/reports/nextest-*).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where the merged reports go.
        #[arg(long, default_value = "target/migsuite/reports")]
        report_dir: PathBuf,
    },
    /// Ask each host of a lab, through libvirt, what it offers: versions,
    /// the machine, the accelerator, and whether the bridge, the pool and a
    /// driver for each backend the inventory lists are there. A simulated
    /// lab's pairs are built for it, each when free.
    Hosts {
        /// The lab inventory; by default $MIGSUITE_LAB, else the built-in
        /// simulated pair; checked against the backends.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// List the volumes migsuite keeps in each host's storage pool (uploaded
    /// kernels and initramfs, disks of runs cut short), through libvirt;
    /// with --remove, delete them. Waits for each pair to be free.
    Volumes {
        /// The lab inventory; by default $MIGSUITE_LAB, else the built-in
        /// simulated pair; checked against the backends.
        #[arg(long)]
        lab: Option<PathBuf>,
        /// Delete the volumes listed.
        #[arg(long)]
        remove: bool,
    },
    /// Run a lab host's agent: sends the host's heartbeat to the failure
    /// monitor and announces going down when the runner orders it, every
    /// datagram sealed with the lab's key (a real host runs this as a
    /// service; a simulated host's agent is a thread of the runner).
    HostAgent {
        /// The host's name in the lab inventory.
        #[arg(long)]
        name: String,
        /// The lab's heartbeat key: at least 32 bytes, mode 600.
        #[arg(long)]
        key: PathBuf,
        /// The host's management address, where it takes the runner's orders.
        #[arg(long)]
        listen: std::net::IpAddr,
        /// The failure monitor's address and port (the runner's).
        #[arg(long)]
        monitor: std::net::SocketAddr,
    },
    /// Serve a runner's CRIU session on this host (openvz on a real lab):
    /// the runner starts it over ssh as root and talks to it on standard
    /// input and output; everything it made goes when its input ends.
    #[command(hide = true)]
    CriuHost {
        /// The session's name, the same on both hosts of a pair.
        #[arg(long)]
        session: String,
    },
    /// Write the HTML page of a JSON report: one self-contained file (inline
    /// figures and style, no scripts, no outside links).
    Report {
        /// A JSON report `migsuite run` wrote.
        report: PathBuf,
        /// Where the page goes; by default beside the report, as .html.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cases = |paths: &[PathBuf]| {
        suite::load_paths(paths).map_err(|e| {
            eprintln!("{e}");
            ExitCode::FAILURE
        })
    };
    let done = match Cli::parse().command {
        Command::Calibrate {
            mtu,
            rate_mbit,
            lab,
        } => inventory(lab).map(|lab| calibrate(mtu, rate_mbit, &lab)),
        Command::Validate { paths, lab } => cases(&paths).and_then(|cases| {
            println!("ok: {} cases", cases.len());
            lab.map_or(Ok(ExitCode::SUCCESS), |lab| {
                let lab = gated_inventory(Some(lab), &cases)?;
                println!("ok: {}", lab_summary(&lab));
                Ok(ExitCode::SUCCESS)
            })
        }),
        Command::List { paths, lab } => cases(&paths).and_then(|cases| {
            let lab = gated_inventory(lab, &cases)?;
            for c in &cases {
                let note = migsuite::runner::left_out(c, &lab)
                    .map_or(String::new(), |why| format!("  ({why})"));
                println!("{}{note}", c.name());
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Run {
            paths,
            filter,
            repeat,
            report_dir,
            lab,
            record,
        } => cases(&paths).and_then(|cases| {
            let lab = inventory(lab)?;
            let repeat = migsuite::suite::repeat_override(repeat).map_err(|e| {
                eprintln!("{e}");
                ExitCode::FAILURE
            })?;
            let selected: Vec<Case> = cases
                .into_iter()
                .filter(|c| {
                    filter
                        .as_ref()
                        .is_none_or(|f| c.name().contains(f.as_str()))
                })
                .collect();
            Ok(run(
                &migsuite::suite::with_repeat(selected, repeat),
                lab,
                &report_dir,
                record,
            ))
        }),
        Command::Merge { paths, report_dir } => {
            cases(&[PathBuf::from("suites")]).map(|cases| merge(&paths, &cases, &report_dir))
        }
        Command::Hosts { lab } => inventory(lab).map(|lab| hosts(&lab)),
        Command::Volumes { lab, remove } => inventory(lab).map(|lab| volumes(&lab, remove)),
        Command::HostAgent {
            name,
            key,
            listen,
            monitor,
        } => Ok(host_agent(&name, &key, listen, monitor)),
        Command::CriuHost { session } => {
            match migsuite::backend::criu::remote::serve::serve(&session) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("{e:#}");
                    Err(ExitCode::FAILURE)
                }
            }
        }
        Command::Report { report, output } => {
            let page = output.unwrap_or_else(|| html::html_path(&report));
            Ok(write_html(&report, &page))
        }
    };
    done.unwrap_or_else(|failed| failed)
}

/// The lab inventory at `path`; without one, $MIGSUITE_LAB's or the built-in
/// simulated pair; checked against the backends.
fn inventory(path: Option<PathBuf>) -> Result<Inventory, ExitCode> {
    match path {
        Some(path) => Inventory::load(&path),
        None => Inventory::from_env(),
    }
    .and_then(|lab| lab.check_ssh(migsuite::backend::over_ssh).map(|()| lab))
    .map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

/// Like [`inventory`], with its `gate` checked against the suites of
/// `cases`.
fn gated_inventory(path: Option<PathBuf>, cases: &[Case]) -> Result<Inventory, ExitCode> {
    let lab = inventory(path)?;
    lab.check_gate(cases).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    Ok(lab)
}

/// Surveys every host of `inventory`; fails if any question had no answer.
fn hosts(inventory: &Inventory) -> ExitCode {
    use migsuite::lab::libvirtd;
    use migsuite::survey;
    let mut surveys = Vec::new();
    let asked = (|| -> anyhow::Result<()> {
        if inventory.simulated {
            each_pair(inventory, true, |lab| {
                for host in [&lab.source, &lab.destination] {
                    let spec = inventory
                        .hosts
                        .iter()
                        .find(|h| h.name == host.name)
                        .expect("a lab's hosts are its inventory's");
                    surveys.push(match lab.connect(&host.uri) {
                        Ok(conn) => survey::survey(conn, spec, true),
                        Err(e) => survey::unreachable(spec, format!("{e:#}")),
                    });
                }
                Ok(())
            })?;
        } else {
            for spec in &inventory.hosts {
                surveys.push(
                    match libvirtd::connect_within(&spec.uri, libvirtd::CONNECT_TIMEOUT) {
                        Ok(conn) => survey::survey(conn, spec, false),
                        Err(e) => survey::unreachable(spec, format!("{e:#}")),
                    },
                );
            }
        }
        Ok(())
    })();
    println!("{}", inventory.describe());
    for s in &surveys {
        print!("{s}");
    }
    match asked {
        Err(e) => {
            eprintln!("hosts: {e:#}");
            ExitCode::FAILURE
        }
        Ok(()) if surveys.iter().all(survey::Survey::clean) => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
    }
}

/// Lists, and with `remove` deletes, the volumes migsuite keeps in the pool
/// of each host of `inventory`, pair by pair (each held as a case holds it).
fn volumes(inventory: &Inventory, remove: bool) -> ExitCode {
    // A real pair is held only to remove: a case there may use its volumes.
    let listed = each_pair(inventory, remove, |lab| {
        // A pool both hosts of the pair see is listed once.
        let (hosts, whose) = match inventory.storage {
            migsuite::inventory::Storage::Shared => (
                vec![&lab.source],
                format!("hosts {} and {}", lab.source.name, lab.destination.name),
            ),
            migsuite::inventory::Storage::Local => {
                (vec![&lab.source, &lab.destination], String::new())
            }
        };
        for host in hosts {
            let pool = lab.pool(host)?;
            let kept = pool.kept()?;
            let mib = kept.iter().map(|v| v.bytes).sum::<u64>() as f64 / f64::from(1 << 20);
            let holder = if whose.is_empty() {
                format!("host {}", host.name)
            } else {
                format!("{whose}, shared")
            };
            println!(
                "{holder} (pool {}): {} volume(s), {mib:.1} MiB",
                host.pool,
                kept.len()
            );
            for volume in kept {
                println!(
                    "  {} {:.1} MiB",
                    volume.name,
                    volume.bytes as f64 / f64::from(1 << 20)
                );
                if migsuite::lab::pool::is_hold(&volume.name) {
                    // Its holder's, this run's or another's: see README, cargo-nextest.
                    println!("    a hold on the host, deleted by its holder");
                } else if remove {
                    pool.delete(&volume.name)?;
                    println!("    removed");
                }
            }
        }
        Ok(())
    });
    match listed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("volumes: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `f` on each pair of `inventory` in turn, built (a simulated pair,
/// at MTU 1500, unshaped, and so held) or reached (a real one, held as a
/// case holds it if `hold`).
fn each_pair(
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
            .then(|| migsuite::runner::exclusive(inventory, &[pair], &|m| eprintln!("{m}")))
            .transpose()?;
        f(&Lab::start(&link, inventory, pair)?)?;
    }
    Ok(())
}

/// Serves as host `name`'s agent until interrupted.
fn host_agent(
    name: &str,
    key: &Path,
    listen: std::net::IpAddr,
    monitor: std::net::SocketAddr,
) -> ExitCode {
    use migsuite::host_agent::{self as agent, probe};
    let served = (|| -> anyhow::Result<()> {
        let key = agent::Key::load(key)?;
        let socket = std::net::UdpSocket::bind((listen, agent::AGENT_PORT))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_signal = stop.clone();
        ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed))?;
        eprintln!(
            "host {name}'s agent: orders on {listen}:{}, heartbeats to {monitor}, \
             measurements on the migration address the runner gives, TCP {}",
            agent::AGENT_PORT,
            probe::PORT
        );
        agent::serve(name, &key, &socket, monitor, &stop)
    })();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `judged`'s figures alone (no stored line kept) as the proposed
/// baseline of `case`, and says where.
fn propose_baseline(session: &Session, case: &Case, judged: &migsuite::session::Judged) {
    let text = migsuite::report::case_snapshot(&judged.verdict, &judged.result.provenance, None);
    let snap = session.snapshot_path(case);
    match migsuite::report::snapshot::propose(&snap, &text) {
        Ok(path) => println!(
            "proposed baseline: {} (accept or reject with `cargo insta review`)",
            path.display()
        ),
        Err(e) => eprintln!("cannot propose a baseline beside {}: {e}", snap.display()),
    }
}

/// What a lab inventory holds: "lab rack (hosts: 2, pairs: 1, gate: real-lab)".
fn lab_summary(lab: &Inventory) -> String {
    let gate = if lab.gate.is_empty() {
        String::new()
    } else {
        format!(", gate: {}", lab.gate.join(", "))
    };
    format!(
        "lab {} (hosts: {}, pairs: {}{gate})",
        lab.name,
        lab.hosts.len(),
        lab.pairs().count()
    )
}

/// Merges the reports at `paths` (their cases in the order of `cases`, the
/// suites'), writes each suite's merged report and page to `report_dir`,
/// and prints its table. Fails, as `run` does, when a merged case failed.
fn merge(paths: &[PathBuf], cases: &[Case], report_dir: &Path) -> ExitCode {
    let order: Vec<String> = cases.iter().map(Case::name).collect();
    let mut failed = Vec::new();
    let written = (|| -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(report_dir)?;
        let mut written = Vec::new();
        for report in migsuite::report::json::merge(paths, &order)? {
            let path = report_dir.join(format!(
                "{}-merged-{}.json",
                report["suite"]
                    .as_str()
                    .unwrap_or("suite")
                    .replace(['/', '\\'], "_"),
                report["started_unix_s"]
            ));
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            let saved: migsuite::report::json::SavedRun = serde_json::from_value(report)?;
            failed.extend(
                saved
                    .cases
                    .iter()
                    .filter(|c| !c.verdict.passed)
                    .map(|c| c.result.case.name()),
            );
            let results: Vec<_> = saved.cases.into_iter().map(|c| c.result).collect();
            for table in suite_tables(&saved.suite, &results) {
                println!("{table}\n");
            }
            written.push(path);
        }
        Ok(written)
    })();
    match written {
        Ok(paths) => {
            for path in paths {
                println!("report: {}", path.display());
                if write_html(&path, &html::html_path(&path)) != ExitCode::SUCCESS {
                    return ExitCode::FAILURE;
                }
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "merge: {} case(s) failed: {}",
                    failed.len(),
                    failed.join(", ")
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("merge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the HTML page of the JSON report `json` to `page`, and says
/// where, or why not.
fn write_html(json: &Path, page: &Path) -> ExitCode {
    match html::write(json, page) {
        Ok(()) => {
            println!("html report: {}", page.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write the HTML report {}: {e:#}", page.display());
            ExitCode::FAILURE
        }
    }
}

fn calibrate(mtu: u32, rate_mbit: u64, inventory: &Inventory) -> ExitCode {
    if !inventory.simulated {
        return calibrate_real(inventory);
    }
    let link = LinkSpec {
        mtu,
        rate_mbit: (rate_mbit > 0).then_some(rate_mbit),
        offloads: false,
    };
    let measured = (|| -> anyhow::Result<_> {
        let pairs: Vec<usize> = (0..inventory.pairs().count()).collect();
        let exclusive = migsuite::runner::exclusive(inventory, &pairs, &|m| eprintln!("{m}"))?;
        let lab = Lab::start(&link, inventory, exclusive.pair)?;
        let in_lab = calibration::link_rates(&lab)?;
        drop(lab);
        Ok((in_lab, calibration::bare_pair_rates(&link)?))
    })();
    match measured {
        Ok((lab, bare)) => {
            println!(
                "MTU {mtu}, link {}, offloads off (TCP payload; on the wire):",
                if rate_mbit > 0 {
                    format!("{rate_mbit} Mbit/s")
                } else {
                    "unshaped".into()
                }
            );
            println!(
                "  lab migration link: {:6.0} Mbit/s; {:6.0} Mbit/s",
                lab.goodput_mbit, lab.wire_mbit
            );
            println!(
                "  bare veth pair:     {:6.0} Mbit/s; {:6.0} Mbit/s",
                bare.goodput_mbit, bare.wire_mbit
            );
            println!(
                "  lab / bare:         {:6.0} %",
                lab.goodput_mbit / bare.goodput_mbit * 100.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("calibrate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a real lab's migration network carries each way between the hosts
/// of its first free pair, as their agents measure it.
fn calibrate_real(inventory: &Inventory) -> ExitCode {
    let mtu = inventory.link_mtu.unwrap_or_default();
    let measured = (|| -> anyhow::Result<_> {
        let pairs: Vec<usize> = (0..inventory.pairs().count()).collect();
        let exclusive = migsuite::runner::exclusive(inventory, &pairs, &|m| eprintln!("{m}"))?;
        let link = LinkSpec {
            mtu,
            rate_mbit: None,
            offloads: true,
        };
        let mut lab = Lab::start(&link, inventory, exclusive.pair)?;
        let mut ways = Vec::new();
        for _ in 0..2 {
            let rates = calibration::link_rates(&lab)?;
            ways.push((lab.source.name.clone(), lab.destination.name.clone(), rates));
            lab.swap_roles();
        }
        Ok(ways)
    })();
    match measured {
        Ok(ways) => {
            println!(
                "lab {}'s migration network, MTU {mtu}, as its hosts' agents measure it (TCP \
                 payload; on the wire):",
                inventory.name
            );
            for (from, to, rates) in ways {
                println!(
                    "  {from} -> {to}: {:6.0} Mbit/s; {:6.0} Mbit/s",
                    rates.goodput_mbit, rates.wire_mbit
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("calibrate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cases: &[Case], lab: Inventory, report_dir: &Path, record: bool) -> ExitCode {
    // Judged against the baselines of the gate's snapshots (the lab's own,
    // for an inventory's lab).
    let session = Session::new(PathBuf::from("snapshots"), lab);
    session.progress(&session.lab.describe());
    // One worker per pair of the lab takes the next case: with one pair the
    // cases run one after another, with n up to n at once (one per pair).
    let workers = session.lab.pairs().count().clamp(1, cases.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::SystemTime::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    session.progress(&format!("case: {}", case.name()));
                    match session.judged(case) {
                        Ok(judged) => {
                            println!(
                                "{}\n{}\n",
                                case_table(
                                    case,
                                    &judged.result.provenance,
                                    &judged.result.runs,
                                    judged.verdict.since_baseline.as_ref()
                                ),
                                judged.verdict
                            );
                            if record {
                                propose_baseline(&session, case, &judged);
                            }
                        }
                        Err(e) => eprintln!("{}: {e}", case.name()),
                    }
                }
            });
        }
    });
    // The tables and reports, in the suites' order.
    let (mut passed, mut failed, mut refused) = (0, 0, 0);
    let mut suites: Vec<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let mut report = RunReport::new(suite, started);
        let mut results = Vec::new();
        for case in cases.iter().filter(|c| c.suite == suite) {
            let Ok(judged) = session.judged(case) else {
                if migsuite::runner::refusal(case, &session.lab).is_some() {
                    refused += 1
                } else {
                    failed += 1
                }
                continue;
            };
            let (result, verdict) = (&judged.result, &judged.verdict);
            if verdict.passed {
                passed += 1
            } else {
                failed += 1
            }
            report
                .cases
                .push(CaseReport::new(result.clone(), verdict.clone()));
            results.push(result.clone());
        }
        for table in suite_tables(suite, &results) {
            println!("{table}\n");
        }
        if !report.cases.is_empty() {
            match write_report(&report, report_dir) {
                Ok((json, page)) => {
                    println!("report: {}", json.display());
                    match page {
                        Ok(page) => println!("html report: {}", page.display()),
                        Err(e) => eprintln!("{e:#}"),
                    }
                }
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
    println!("{passed} passed, {failed} failed, {refused} refused");
    if failed + refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
