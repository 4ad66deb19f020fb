//! The study's own figures beside ours. Its published numbers live in
//! `study-published.yaml` (each with the table it comes from): per
//! hypervisor and packet data size, the average total migration time and
//! downtime, and the landmark tables of CPU and memory.
//!
//! The study's "packet data size" is the MTU of its 1500 and 1000 B rows;
//! its "32 B" row cannot be an MTU on Linux, so it is matched by the
//! workload's 32-byte packets (at whatever MTU the case ran). Only workloads
//! that keep at least 100 MiB dirty stand for the study's 180 MB game.

use super::results::{mean_landmarks, share_of_host};
use super::table::{Cell, Table};
use crate::case::{Hypervisor, PacketSize};
use crate::measure::{CaseResult, Unit};
use crate::metrics::CaseSummary;
use serde::Deserialize;
use std::sync::LazyLock;

/// The study's five rows, in its order (by the names migsuite's backends
/// give them).
pub const XEN_PV: Hypervisor = Hypervisor::row("xen-pv");
pub const XEN_HVM: Hypervisor = Hypervisor::row("xen-hvm");
pub const OPENVZ: Hypervisor = Hypervisor::row("openvz");
pub const KVM_FV: Hypervisor = Hypervisor::row("kvm-fv");
pub const KVM_PV: Hypervisor = Hypervisor::row("kvm-pv");
pub const ROWS: [Hypervisor; 5] = [XEN_PV, XEN_HVM, OPENVZ, KVM_FV, KVM_PV];

/// Smallest dirty set that stands for the study's 180 MB game.
const GAME_MIB: u32 = 100;

/// What the study published of one hypervisor at one packet data size.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub hypervisor: Hypervisor,
    /// Bytes.
    pub packet_data_size: u32,
    pub migration: PublishedMigration,
    pub cpu: PublishedLandmarks,
    pub memory: PublishedLandmarks,
}

/// Averages over the study's migrations; None where it gives none ("No
/// limit": KVM-FV crashed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedMigration {
    /// The table or section it comes from, e.g. "Tab. 7".
    pub source: String,
    pub total_s: Option<f64>,
    pub downtime_ms: Option<f64>,
}

/// One of the study's landmark tables, in % of the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedLandmarks {
    pub source: String,
    pub before_pct: f64,
    pub peak: PublishedPoint,
    /// The CPU tables' row between the peak and the stabilised value.
    pub falling: Option<PublishedPoint>,
    /// None where the study could not calculate it (KVM-FV at 32 B).
    pub stabilised: Option<PublishedPoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPoint {
    pub pct: f64,
    /// Seconds after the migration began.
    pub at_s: f64,
}

/// Everything the study published, in the data file's order.
pub fn published() -> &'static [Published] {
    static PUBLISHED: LazyLock<Vec<Published>> = LazyLock::new(|| {
        serde_yaml::from_str(include_str!("study-published.yaml"))
            .expect("study-published.yaml parses (a unit test checks it)")
    });
    &PUBLISHED
}

/// The study's packet data size a case stands for, if any.
pub(crate) fn packet_data_size(r: &CaseResult) -> Option<u32> {
    let w = &r.case.workload;
    if w.dirty_mib < GAME_MIB {
        return None;
    }
    match w.packet_size {
        PacketSize::Bytes(32) => Some(32),
        PacketSize::Fill if matches!(r.case.link.mtu, 1500 | 1000) => Some(r.case.link.mtu),
        _ => None,
    }
}

/// The comparison for the cases of `results` that stand for a row of the
/// study; None if none does.
pub fn study_table(results: &[CaseResult]) -> Option<Table> {
    let mut t = Table::new(
        "the study beside migsuite (total migration time and downtime)",
        &[
            "hypervisor",
            "packet data size",
            "study",
            "study total",
            "our total (median)",
            "study downtime",
            "our downtime (median)",
            "our case",
        ],
    );
    t.notes.push(
        "study: both VMs on one physical host, 2010s hardware, 180 MB game; ours: see each case's provenance"
            .into(),
    );
    for p in published() {
        let (hypervisor, size) = (p.hypervisor, p.packet_data_size);
        let ours = results
            .iter()
            .filter(|r| r.case.hypervisor == hypervisor && packet_data_size(r) == Some(size));
        for r in ours {
            let summary = CaseSummary::of(&r.runs);
            let median = |key: &str| summary.get(key).map(|s| s.median);
            t.rows.push(vec![
                Cell::text(hypervisor.name()),
                Cell::text(format!("{size} B")),
                Cell::text(&p.migration.source),
                p.migration
                    .total_s
                    .map_or(Cell::text("no limit (crashed)"), |s| {
                        Cell::num(s * 1000.0, Some(Unit::Ms), 0)
                    }),
                Cell::opt(median("total_time"), Some(Unit::Ms), 0),
                Cell::opt(p.migration.downtime_ms, Some(Unit::Ms), 0),
                Cell::opt(median("downtime"), Some(Unit::Ms), 0),
                Cell::text(r.case.name()),
            ]);
        }
    }
    (!t.rows.is_empty()).then_some(t)
}

/// The study's landmark tables beside ours, for the cases that stand for
/// one of its rows; None if none does. Ours are the source host's
/// hypervisor (where the guest ran before the warning), as shares of the
/// host where the report gives its size.
pub fn study_landmarks_table(results: &[CaseResult]) -> Option<Table> {
    let mut t = Table::new(
        "the study's landmarks beside migsuite's (CPU and memory, % of the host)",
        &[
            "hypervisor",
            "packet data size",
            "quantity",
            "study",
            "study before",
            "study peak",
            "study stabilised",
            "our before",
            "our peak",
            "our settled",
            "our case",
        ],
    );
    t.notes.push(
        "study: seconds after the migration began; ours: after the warning, the source host's hypervisor, means over the completed runs"
            .into(),
    );
    for p in published() {
        let ours = results.iter().filter(|r| {
            r.case.hypervisor == p.hypervisor && packet_data_size(r) == Some(p.packet_data_size)
        });
        for r in ours {
            for (quantity, study, timeline, unit) in [
                ("CPU", &p.cpu, "cpu.source.hypervisor", Unit::Percent),
                ("memory", &p.memory, "memory.source.hypervisor", Unit::Mib),
            ] {
                let ours = mean_landmarks(&r.case, &r.runs, timeline);
                let share = |v: f64| share_of_host(&r.provenance, unit, v);
                let our = |level: Option<f64>, at_ms: Option<f64>| match level.and_then(share) {
                    Some(pct) => Cell::text(at(pct, at_ms.map(|ms| ms / 1000.0))),
                    None => Cell::Missing,
                };
                t.rows.push(vec![
                    Cell::text(p.hypervisor.name()),
                    Cell::text(format!("{} B", p.packet_data_size)),
                    Cell::text(quantity),
                    Cell::text(&study.source),
                    Cell::num(study.before_pct, Some(Unit::Percent), 2),
                    Cell::text(at(study.peak.pct, Some(study.peak.at_s))),
                    study
                        .stabilised
                        .as_ref()
                        .map_or(Cell::text("not calculable (crashed)"), |s| {
                            Cell::text(at(s.pct, Some(s.at_s)))
                        }),
                    our(ours.as_ref().map(|l| l.baseline), None),
                    our(
                        ours.as_ref().map(|l| l.peak),
                        ours.as_ref().map(|l| l.peak_at_ms),
                    ),
                    our(
                        ours.as_ref().map(|l| l.settled),
                        ours.as_ref().map(|l| l.settled_at_ms),
                    ),
                    Cell::text(r.case.name()),
                ]);
            }
        }
    }
    (!t.rows.is_empty()).then_some(t)
}

/// "9.63 % at 1.65 s", or just the percentage without a time.
fn at(pct: f64, at_s: Option<f64>) -> String {
    match at_s {
        Some(s) => format!("{pct:.2} % at {s:.2} s"),
        None => format!("{pct:.2} %"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Case;
    use crate::report::fixtures::{case, provenance, run};

    fn result(hypervisor: Hypervisor, mtu: u32, packets: PacketSize, dirty_mib: u32) -> CaseResult {
        let mut case: Case = case();
        case.hypervisor = hypervisor;
        case.link.mtu = mtu;
        case.workload.packet_size = packets;
        case.workload.dirty_mib = dirty_mib;
        CaseResult {
            case,
            provenance: provenance(),
            calibration: Default::default(),
            held_unix_ms: None,
            runs: vec![run(9500.0, 320.0), run(9400.0, 300.0), run(9700.0, 330.0)],
        }
    }

    #[test]
    fn rows_of_the_study_beside_our_medians() {
        let results = [
            result(KVM_PV, 1500, PacketSize::Fill, 180),
            result(KVM_PV, 128, PacketSize::Bytes(32), 180),
            result(KVM_FV, 128, PacketSize::Bytes(32), 180),
            // Not the study's game, not one of its sizes: left out.
            result(KVM_PV, 1500, PacketSize::Fill, 16),
            result(KVM_PV, 576, PacketSize::Fill, 180),
        ];
        let text = study_table(&results).unwrap().to_string();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| kvm")).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows[0].starts_with("| kvm-fv     | 32 B             | Tab. 28 | no limit (crashed) |"),
            "{text}"
        );
        assert!(rows[1].contains("| Tab. 35 |"), "{text}");
        assert!(rows[1].contains("4040 ms"), "{text}");
        assert!(rows[1].contains("9500 ms"), "{text}");
        assert!(rows[2].contains("25420 ms"), "{text}");
    }

    #[test]
    fn every_hypervisor_and_packet_size_is_published_once() {
        for hypervisor in ROWS {
            for size in [1500, 1000, 32] {
                let rows = published()
                    .iter()
                    .filter(|p| p.hypervisor == hypervisor && p.packet_data_size == size)
                    .count();
                assert_eq!(rows, 1, "{hypervisor} at {size} B");
            }
        }
        assert_eq!(published().len(), 15);
        let xen_pv_1500 = &published()[0];
        assert_eq!(xen_pv_1500.migration.total_s, Some(2.66));
        assert_eq!(xen_pv_1500.cpu.source, "Tab. 1");
    }

    #[test]
    fn landmarks_of_the_study_beside_ours() {
        let t = study_landmarks_table(&[result(XEN_PV, 1500, PacketSize::Fill, 180)]).unwrap();
        let cpu = t.rows[0].iter().map(Cell::render).collect::<Vec<_>>();
        // Fixture: 12 % of one CPU before, 95 % at 0 s, 0 % once the run ends
        // (9.4-9.7 s, on a 250 ms grid), on 2 CPUs.
        assert_eq!(
            cpu[2..10],
            [
                "CPU",
                "Tab. 1",
                "2.23 %",
                "9.63 % at 1.65 s",
                "2.11 % at 3.66 s",
                "6.00 %",
                "47.50 % at 0.00 s",
                "0.00 % at 9.58 s"
            ]
        );
        assert_eq!(t.rows[1][3], Cell::text("Tab. 2"));
        assert!(study_landmarks_table(&[result(XEN_PV, 576, PacketSize::Fill, 180)]).is_none());
    }

    #[test]
    fn nothing_to_compare_is_no_table() {
        assert!(study_table(&[result(KVM_PV, 1500, PacketSize::Fill, 16)]).is_none());
    }
}
