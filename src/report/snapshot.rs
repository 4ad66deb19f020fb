//! Snapshot text that tolerates measurement noise: a re-run whose numbers
//! moved only within tolerance reproduces the stored snapshot byte for byte,
//! so snapshot diffs show real changes only.

use super::results::VERSIONS;
use super::table::{Cell, Table};
use crate::case::Tolerance;
use crate::measure::Unit;

/// The body of an insta `.snap` file: everything after its `---`-delimited
/// YAML header, without the trailing newline(s) insta writes. Text without a
/// header is returned whole.
pub fn snap_body(snap_file_text: &str) -> &str {
    let text = snap_file_text.trim_start_matches('\u{feff}');
    let is_rule = |line: &str| line.trim_end() == "---";
    let mut lines = text.split_inclusive('\n');
    let body = match lines.next() {
        Some(first) if is_rule(first) => {
            let mut offset = first.len();
            let closed = lines.any(|line| {
                offset += line.len();
                is_rule(line)
            });
            if closed {
                &text[offset..]
            } else {
                text
            }
        }
        _ => text,
    };
    body.trim_end_matches(['\n', '\r'])
}

/// A table without the versions line of its provenance, as snapshots keep
/// it: a package update alone (say QEMU 10.0.2 to 10.0.3) should not fail
/// the gate; the accelerator and the host kind stay, as they change what is
/// measured.
pub fn without_versions(mut table: Table) -> Table {
    table.notes.retain(|n| !n.contains(VERSIONS));
    table
}

/// The rows of a case table that gate regressions: values of the guest's
/// hypervisor processes and of the migration. Left out, though printed and
/// in the JSON report: the instants of landmarks (where on a plateau a peak
/// falls is noise), machine-wide and toolstack series (they depend on what
/// else the machine runs) and iteration counts (small integers that flip).
pub fn gated(table: Table) -> Table {
    let mut table = without_versions(table);
    table.rows.retain(|row| match (&row[0], &row[1]) {
        (Cell::Text(series), Cell::Text(measure)) => {
            (series.ends_with(".hypervisor") || series == "migration")
                && !measure.ends_with(" at")
                && measure != "memory iterations"
        }
        _ => true,
    });
    table
}

/// Renders `new`, keeping a stored number verbatim where the stored snapshot
/// has a cell of the same row key (leading text cells) and column header whose
/// number is within tolerance of the new one: |new - old| <= max(relative *
/// |old|, the unit's floor). Cells without a unit (counts) get the relative
/// tolerance only. A stored cell is kept only if it is formatted as the new
/// cell would be (same unit, same decimals). Columns keep their stored
/// widths when the content still fits, so a shrinking number changes one line.
/// Title and notes (provenance) are always the new ones.
pub fn stabilise(new: &Table, stored: Option<&str>, tol: &Tolerance) -> String {
    let Some(stored) = stored.map(Stored::parse) else {
        return new.to_string();
    };
    let column = |c: usize| stored.headers.iter().position(|h| *h == new.headers[c]);
    let cells: Vec<Vec<String>> = new
        .rows
        .iter()
        .map(|row| {
            let old_row = stored.row(row);
            row.iter()
                .enumerate()
                .map(|(c, cell)| {
                    old_row
                        .and_then(|r| r.get(column(c)?))
                        .filter(|old| within(cell, old, tol))
                        .map_or_else(|| cell.render(), |old| old.to_string())
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..new.headers.len())
        .map(|c| column(c).map_or(0, |i| stored.widths[i]))
        .collect();
    new.layout(&cells, &widths)
}

/// The table part of a stored snapshot, cells trimmed.
struct Stored<'a> {
    headers: Vec<&'a str>,
    widths: Vec<usize>,
    rows: Vec<Vec<&'a str>>,
}

impl<'a> Stored<'a> {
    fn parse(text: &'a str) -> Stored<'a> {
        let mut lines = text.lines().filter(|l| l.starts_with('|'));
        let header = lines.next().map(segments).unwrap_or_default();
        Stored {
            headers: header.iter().map(|s| s.trim()).collect(),
            // A cell is padded with one space either side.
            widths: header
                .iter()
                .map(|s| s.chars().count().saturating_sub(2))
                .collect(),
            rows: lines
                .skip(1)
                .map(|l| segments(l).into_iter().map(str::trim).collect())
                .collect(),
        }
    }

    /// The stored row with the same key as `row`, if `row` has a key.
    fn row(&self, row: &[Cell]) -> Option<&Vec<&'a str>> {
        let key: Vec<String> = row[..Table::key_len(row)]
            .iter()
            .map(Cell::render)
            .collect();
        if key.is_empty() {
            return None;
        }
        self.rows
            .iter()
            .find(|r| r.len() >= key.len() && r.iter().zip(&key).all(|(old, new)| old == new))
    }
}

/// The cells of a table line, untrimmed; an escaped `\|` does not split.
fn segments(line: &str) -> Vec<&str> {
    let inner = line.trim_end();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![];
    let (mut start, mut prev) = (0, ' ');
    for (i, ch) in inner.char_indices() {
        if ch == '|' && prev != '\\' {
            out.push(&inner[start..i]);
            start = i + 1;
        }
        prev = ch;
    }
    out.push(&inner[start..]);
    out
}

fn within(cell: &Cell, old: &str, tol: &Tolerance) -> bool {
    let Cell::Num {
        value,
        unit,
        decimals,
    } = *cell
    else {
        return false;
    };
    let Some(old_value) = old.split(' ').next().and_then(|n| n.parse::<f64>().ok()) else {
        return false;
    };
    let floor = match unit {
        Some(Unit::Ms) => tol.ms,
        Some(Unit::Percent) => tol.percent,
        Some(Unit::Mib) => tol.mib,
        None => 0.0,
    };
    Cell::num(old_value, unit, decimals).render() == old
        && (value - old_value).abs() <= (tol.relative * old_value.abs()).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gated_tables_keep_gated_rows_and_no_versions() {
        let mut t = Table::new("c", &["series", "measure", "value"]);
        t.notes = vec!["accel: tcg; host: h".into(), format!("{VERSIONS}hypervisor QEMU 1")];
        for (series, measure) in [("cpu.source.hypervisor", "peak"), ("cpu.source.hypervisor", "peak at"), ("cpu.machine", "peak"), ("migration", "memory iterations"), ("migration", "total time (runner)")] {
            t.rows.push(vec![Cell::text(series), Cell::text(measure), Cell::num(1.0, None, 1)]);
        }
        let g = gated(t);
        assert_eq!(g.notes, ["accel: tcg; host: h"]);
        let kept: Vec<&Cell> = g.rows.iter().map(|r| &r[1]).collect();
        assert_eq!(kept, [&Cell::text("peak"), &Cell::text("total time (runner)")]);
    }
    use rstest::rstest;

    const TOL: Tolerance = Tolerance {
        relative: 0.1,
        ms: 50.0,
        percent: 5.0,
        mib: 8.0,
    };

    fn table(downtime: f64, cpu: f64, iterations: f64) -> Table {
        let mut t = Table::new("ci::kvm-fv::mtu128::game", &["series", "measure", "value"]);
        t.notes.push("accel: tcg".into());
        for (measure, cell) in [
            ("downtime", Cell::num(downtime, Some(Unit::Ms), 1)),
            ("peak CPU", Cell::num(cpu, Some(Unit::Percent), 1)),
            ("memory iterations", Cell::num(iterations, None, 1)),
        ] {
            t.rows
                .push(vec![Cell::text("migration"), Cell::text(measure), cell]);
        }
        t
    }

    /// Lines of `new` that are not the same line of `old`.
    fn changed<'a>(old: &str, new: &'a str) -> Vec<&'a str> {
        let old: Vec<&str> = old.lines().collect();
        new.lines()
            .enumerate()
            .filter(|(i, l)| old.get(*i) != Some(l))
            .map(|(_, l)| l)
            .collect()
    }

    #[test]
    fn nothing_stored_is_a_plain_render() {
        let t = table(812.0, 95.0, 3.0);
        assert_eq!(stabilise(&t, None, &TOL), t.to_string());
    }

    #[rstest]
    #[case::unchanged(812.0, 95.0, 3.0)]
    #[case::relative(880.0, 95.0, 3.2)]
    #[case::floors(812.0, 99.9, 3.0)]
    fn noise_keeps_the_stored_text(
        #[case] downtime: f64,
        #[case] cpu: f64,
        #[case] iterations: f64,
    ) {
        let stored = table(812.0, 95.0, 3.0).to_string();
        assert_eq!(
            stabilise(&table(downtime, cpu, iterations), Some(&stored), &TOL),
            stored
        );
    }

    #[test]
    fn a_real_change_shows_in_its_cell() {
        let stored = table(812.0, 95.0, 3.0).to_string();
        let text = stabilise(&table(8120.0, 95.0, 3.0), Some(&stored), &TOL);
        let diff = changed(&stored, &text);
        assert!(
            diff.iter()
                .any(|l| l.contains("| downtime          | 8120.0 ms |")),
            "{text}"
        );
        assert!(text.contains("95.0 %") && text.contains("3.0"));
    }

    #[test]
    fn a_shrinking_value_changes_only_its_line() {
        let stored = table(8120.0, 95.0, 3.0).to_string();
        let text = stabilise(&table(812.0, 95.0, 3.0), Some(&stored), &TOL);
        assert_eq!(
            changed(&stored, &text),
            ["| migration | downtime          |  812.0 ms |"]
        );
    }

    #[test]
    fn counts_have_no_absolute_floor() {
        let stored = table(812.0, 95.0, 3.0).to_string();
        let text = stabilise(&table(812.0, 95.0, 4.0), Some(&stored), &TOL);
        assert_eq!(
            changed(&stored, &text),
            ["| migration | memory iterations |      4.0 |"]
        );
    }

    #[test]
    fn a_changed_format_is_not_kept() {
        let stored = table(812.0, 95.0, 3.0).to_string();
        let mut t = table(812.0, 95.0, 3.0);
        t.rows[0][2] = Cell::num(812.0, Some(Unit::Ms), 0);
        assert!(stabilise(&t, Some(&stored), &TOL).contains("812 ms"));
    }

    #[test]
    fn rows_added_and_removed() {
        let stored = table(812.0, 95.0, 3.0).to_string();
        let mut t = table(820.0, 95.0, 3.0);
        t.rows.remove(1);
        t.rows.push(vec![
            Cell::text("migration"),
            Cell::text("setup time"),
            Cell::num(41.0, Some(Unit::Ms), 1),
        ]);
        let text = stabilise(&t, Some(&stored), &TOL);
        assert!(
            text.contains("| migration | downtime          | 812.0 ms |"),
            "{text}"
        );
        assert!(
            text.contains("| migration | setup time        |  41.0 ms |"),
            "{text}"
        );
        assert!(!text.contains("peak CPU"));
    }

    #[test]
    fn notes_are_always_new() {
        let stored = table(812.0, 95.0, 3.0).to_string();
        let mut t = table(812.0, 95.0, 3.0);
        t.notes[0] = "accel: kvm".into();
        assert_eq!(
            changed(&stored, &stabilise(&t, Some(&stored), &TOL)),
            ["accel: kvm"]
        );
    }

    #[test]
    fn escaped_pipes_stay_in_their_cell() {
        let mut t = table(812.0, 95.0, 3.0);
        t.rows[0][0] = Cell::text("a|b");
        let stored = t.to_string();
        t.rows[0][2] = Cell::num(820.0, Some(Unit::Ms), 1);
        assert_eq!(stabilise(&t, Some(&stored), &TOL), stored);
    }

    #[rstest]
    #[case::insta(
        "---\nsource: tests/suites.rs\nexpression: text\n---\nbody\nmore\n",
        "body\nmore"
    )]
    #[case::crlf("---\r\nsource: x\r\n---\r\nbody\r\n", "body")]
    #[case::no_header("body\n", "body")]
    #[case::unclosed_header("---\nsource: x\n", "---\nsource: x")]
    #[case::empty_body("---\nsource: x\n---\n", "")]
    fn snap_bodies(#[case] file: &str, #[case] body: &str) {
        assert_eq!(snap_body(file), body);
    }

    #[test]
    fn stored_snap_file_round_trip() {
        let t = table(812.0, 95.0, 3.0);
        let file = format!("---\nsource: tests/suites.rs\nexpression: report\n---\n{t}\n");
        assert_eq!(
            stabilise(&table(800.0, 96.0, 3.0), Some(snap_body(&file)), &TOL),
            t.to_string()
        );
    }
}
