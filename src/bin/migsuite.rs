//! migsuite: validate, list and run live-migration suites.

use clap::{Parser, Subcommand};
use migsuite::case::{Case, LinkSpec};
use migsuite::inventory::Inventory;
use migsuite::report::{case_table, html, suite_tables, write_report};
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
        /// simulated pair.
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
        /// simulated pair.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// List the volumes migsuite keeps in each host's storage pool (uploaded
    /// kernels and initramfs, disks of runs cut short), through libvirt;
    /// with --remove, delete them. Waits for each pair to be free.
    Volumes {
        /// The lab inventory; by default $MIGSUITE_LAB, else the built-in
        /// simulated pair.
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
    /// Judge the cases of JSON reports again, with no lab: their runs
    /// against the bounds they ran with and the baselines in `snapshots/`
    /// now; says where a verdict differs from the one recorded.
    Rejudge {
        /// JSON reports `migsuite run` or `cargo test` wrote.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// The lab whose baselines to judge against; by default
        /// $MIGSUITE_LAB, else the built-in simulated pair.
        #[arg(long)]
        lab: Option<PathBuf>,
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
                println!("ok: {}", lab.summary());
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
        Command::Rejudge { reports, lab } => inventory(lab).map(|lab| rejudge(&reports, &lab)),
    };
    done.unwrap_or_else(|failed| failed)
}

/// The lab inventory at `path`; without one, $MIGSUITE_LAB's or the built-in
/// simulated pair; checked against the backends.
fn inventory(path: Option<PathBuf>) -> Result<Inventory, ExitCode> {
    let catalog = migsuite::backend::catalog();
    match path {
        Some(path) => Inventory::load(&path).and_then(|lab| lab.checked(&catalog)),
        None => Inventory::from_env(&catalog),
    }
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
    let (surveys, asked) = migsuite::survey::survey_lab(inventory);
    println!("{}", inventory.describe());
    for s in &surveys {
        print!("{s}");
    }
    match asked {
        Err(e) => {
            eprintln!("hosts: {e:#}");
            ExitCode::FAILURE
        }
        Ok(()) if surveys.iter().all(migsuite::survey::Survey::clean) => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
    }
}

/// Lists, and with `remove` deletes, the volumes migsuite keeps in the pool
/// of each host of `inventory`, pair by pair (each held as a case holds it).
fn volumes(inventory: &Inventory, remove: bool) -> ExitCode {
    // A real pair is held only to remove: a case there may use its volumes.
    let listed = migsuite::runner::each_pair(inventory, remove, |lab| {
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

/// Serves as host `name`'s agent until interrupted.
fn host_agent(
    name: &str,
    key: &Path,
    listen: std::net::IpAddr,
    monitor: std::net::SocketAddr,
) -> ExitCode {
    match migsuite::host_agent::serve::until_interrupted(name, key, listen, monitor) {
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

/// Merges the reports at `paths` (their cases in the order of `cases`, the
/// suites'), writes each suite's merged report and page to `report_dir`,
/// and prints its table. Fails, as `run` does, when a merged case failed.
fn merge(paths: &[PathBuf], cases: &[Case], report_dir: &Path) -> ExitCode {
    let order: Vec<String> = cases.iter().map(Case::name).collect();
    let written = match migsuite::report::json::write_merged(paths, &order, report_dir) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("merge: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = Vec::new();
    for (path, saved) in written {
        let failing = saved.cases.iter().filter(|c| !c.verdict.passed);
        failed.extend(failing.map(|c| c.result.case.name()));
        let results: Vec<_> = saved.cases.into_iter().map(|c| c.result).collect();
        for table in suite_tables(&saved.suite, &results) {
            println!("{table}\n");
        }
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
    let shown = if inventory.simulated {
        let link = LinkSpec {
            mtu,
            rate_mbit: (rate_mbit > 0).then_some(rate_mbit),
            offloads: false,
        };
        migsuite::calibrate::simulated(&link, inventory).map(|(lab, bare)| {
            let rate = match link.rate_mbit {
                Some(rate) => format!("{rate} Mbit/s"),
                None => "unshaped".into(),
            };
            println!("MTU {mtu}, link {rate}, offloads off (TCP payload; on the wire):");
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
        })
    } else {
        migsuite::calibrate::real(inventory).map(|ways| {
            println!(
                "lab {}'s migration network, MTU {}, as its hosts' agents measure it (TCP \
                 payload; on the wire):",
                inventory.name,
                inventory.link_mtu.unwrap_or_default()
            );
            for (from, to, rates) in ways {
                println!(
                    "  {from} -> {to}: {:6.0} Mbit/s; {:6.0} Mbit/s",
                    rates.goodput_mbit, rates.wire_mbit
                );
            }
        })
    };
    match shown {
        Ok(()) => ExitCode::SUCCESS,
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
        let outcome = session.suite_outcome(suite, cases, started);
        (passed, failed, refused) = (
            passed + outcome.passed,
            failed + outcome.failed,
            refused + outcome.refused,
        );
        for table in suite_tables(suite, &outcome.results) {
            println!("{table}\n");
        }
        if !outcome.report.cases.is_empty() {
            match write_report(&outcome.report, report_dir) {
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

/// The cases of `reports` judged again against `lab`'s baselines; fails
/// when a case fails now or a report cannot be read.
fn rejudge(reports: &[PathBuf], lab: &Inventory) -> ExitCode {
    let (mut passed, mut failed, mut changed) = (0, 0, 0);
    for report in reports {
        let judged =
            migsuite::rejudge::rejudge(report, Path::new("snapshots"), lab.snapshot_suffix());
        let judged = match judged {
            Ok(judged) => judged,
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::FAILURE;
            }
        };
        for case in judged {
            let (again, of) = case.rederived;
            println!(
                "{}\n{}: {again} of {of} run(s) worked out again from what they observed\n",
                case.verdict, case.case
            );
            if case.verdict.passed != case.passed_then {
                changed += 1;
                let then = if case.passed_then { "passed" } else { "failed" };
                println!("{}: {then} when it ran\n", case.case);
            }
            if case.verdict.passed {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed; {changed} verdict(s) other than recorded");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
