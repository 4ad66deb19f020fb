//! The study's own figures beside ours: per hypervisor and packet data size,
//! the average total migration time and downtime the study published (its
//! Tab. 7, 14, 21, 28 and 35) next to the medians migsuite measured.
//!
//! The study's "packet data size" is the MTU of its 1500 and 1000 B rows;
//! its "32 B" row cannot be an MTU on Linux, so it is matched by the
//! workload's 32-byte packets (at whatever MTU the case ran). Only workloads
//! that keep at least 100 MiB dirty stand for the study's 180 MB game.

use super::table::{Cell, Table};
use crate::case::{Hypervisor, PacketSize};
use crate::measure::{CaseResult, Unit};
use crate::stats::CaseSummary;

/// Smallest dirty set that stands for the study's 180 MB game.
const GAME_MIB: u32 = 100;

/// One published row: packet data size (bytes), total time (s), downtime
/// (ms); None where the study gives none ("No limit": KVM-FV crashed).
type Row = (u32, Option<f64>, Option<f64>);

/// (hypervisor, the study's table, its rows), transcribed from
/// `shared/reference/migration-study.txt`.
const PUBLISHED: [(Hypervisor, &str, &[Row]); 5] = [
    (
        Hypervisor::XenPv,
        "Tab. 7",
        &[(1000, Some(3.8), Some(7.0)), (32, Some(5.8), Some(11.0))],
    ),
    (
        Hypervisor::XenHvm,
        "Tab. 14",
        &[
            (1500, Some(4.10), Some(8.0)),
            (1000, Some(4.77), Some(10.0)),
            (32, Some(8.52), Some(27.0)),
        ],
    ),
    (
        Hypervisor::Openvz,
        "Tab. 21",
        &[
            (1500, Some(2.06), Some(3.0)),
            (1000, Some(2.42), Some(4.0)),
            (32, Some(11.2), Some(56.0)),
        ],
    ),
    (
        Hypervisor::KvmFv,
        "Tab. 28",
        &[
            (1500, Some(4.82), Some(11.0)),
            (1000, Some(5.6), Some(14.0)),
            (32, None, None),
        ],
    ),
    (
        Hypervisor::KvmPv,
        "Tab. 35",
        &[
            (1500, Some(4.04), Some(9.0)),
            (1000, Some(5.1), Some(12.0)),
            (32, Some(25.42), Some(81.0)),
        ],
    ),
];

/// The study's packet data size a case stands for, if any.
fn packet_data_size(r: &CaseResult) -> Option<u32> {
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
    for (hypervisor, table, rows) in PUBLISHED {
        for &(size, total_s, downtime_ms) in rows {
            let ours: Vec<&CaseResult> = results
                .iter()
                .filter(|r| r.case.hypervisor == hypervisor && packet_data_size(r) == Some(size))
                .collect();
            for r in ours {
                let summary = CaseSummary::of(&r.runs);
                let median = |key: &str| summary.get(key).map(|s| s.median);
                t.rows.push(vec![
                    Cell::text(hypervisor.name()),
                    Cell::text(format!("{size} B")),
                    Cell::text(table),
                    total_s.map_or(Cell::text("no limit (crashed)"), |s| {
                        Cell::num(s * 1000.0, Some(Unit::Ms), 0)
                    }),
                    Cell::opt(median("total_time"), Some(Unit::Ms), 0),
                    Cell::opt(downtime_ms, Some(Unit::Ms), 0),
                    Cell::opt(median("downtime"), Some(Unit::Ms), 0),
                    Cell::text(r.case.name()),
                ]);
            }
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
    fn nothing_to_compare_is_no_table() {
        assert!(study_table(&[result(Hypervisor::KvmPv, 1500, PacketSize::Fill, 16)]).is_none());
    }
}
