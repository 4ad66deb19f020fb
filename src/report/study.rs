//! The study's own figures beside ours. Its published numbers live in
//! `study-published.yaml` (each with the table it comes from): per
//! hypervisor and packet data size, the average total migration time and
//! downtime, and the landmark tables of CPU and memory.
//!
//! The study's "packet data size" is the MTU of its 1500 and 1000 B rows;
//! its "32 B" row cannot be an MTU on Linux, so it is matched by the
//! workload's 32-byte packets (at whatever MTU the case ran). Only workloads
//! that keep at least 100 MiB dirty stand for the study's 180 MB game.

use super::table::{Cell, Table};
use crate::case::{Hypervisor, PacketSize};
use crate::measure::{CaseResult, Unit};
use crate::stats::CaseSummary;
use serde::Deserialize;
use std::sync::LazyLock;

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
            runs: vec![run(9500.0, 320.0), run(9400.0, 300.0), run(9700.0, 330.0)],
        }
    }

    #[test]
    fn rows_of_the_study_beside_our_medians() {
        let results = [
            result(Hypervisor::KvmPv, 1500, PacketSize::Fill, 180),
            result(Hypervisor::KvmPv, 128, PacketSize::Bytes(32), 180),
            result(Hypervisor::KvmFv, 128, PacketSize::Bytes(32), 180),
            // Not the study's game, not one of its sizes: left out.
            result(Hypervisor::KvmPv, 1500, PacketSize::Fill, 16),
            result(Hypervisor::KvmPv, 576, PacketSize::Fill, 180),
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
        for hypervisor in Hypervisor::ALL {
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
    fn nothing_to_compare_is_no_table() {
        assert!(study_table(&[result(Hypervisor::KvmPv, 1500, PacketSize::Fill, 16)]).is_none());
    }
}
