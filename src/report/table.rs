//! A small result table, rendered as aligned pipe-separated text (valid
//! markdown): text left-aligned, numeric columns right-aligned.

use crate::measure::Unit;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    /// `unit` None: a count or other plain number.
    Num {
        value: f64,
        unit: Option<Unit>,
        decimals: usize,
    },
    /// Not measured; rendered "-".
    Missing,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    pub fn num(value: f64, unit: Option<Unit>, decimals: usize) -> Cell {
        Cell::Num {
            value,
            unit,
            decimals,
        }
    }

    pub fn opt(value: Option<f64>, unit: Option<Unit>, decimals: usize) -> Cell {
        value.map_or(Cell::Missing, |v| Cell::num(v, unit, decimals))
    }

    pub fn render(&self) -> String {
        match self {
            // Escaped so that a cell never splits its row.
            Cell::Text(s) => s.replace('|', "\\|").replace('\n', " "),
            Cell::Num {
                value,
                unit: None,
                decimals,
            } => format!("{:.*}", *decimals, value),
            Cell::Num {
                value,
                unit: Some(u),
                decimals,
            } => format!("{:.*} {}", *decimals, value, u.suffix()),
            Cell::Missing => "-".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub title: String,
    /// Lines between the title and the table (provenance, outcome).
    pub notes: Vec<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            notes: vec![],
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
        }
    }

    /// Whether `column` holds numbers only (right-aligned).
    pub(crate) fn numeric(&self, column: usize) -> bool {
        let cells = || self.rows.iter().filter_map(|r| r.get(column));
        cells().any(|c| matches!(c, Cell::Num { .. }))
            && !cells().any(|c| matches!(c, Cell::Text(_)))
    }

    /// Lays out already rendered cells (one string per cell of `self.rows`).
    fn layout(&self, cells: &[Vec<String>]) -> String {
        let len = |s: &str| s.chars().count();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                let widest = cells
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| len(s))
                    .max()
                    .unwrap_or(0);
                widest.max(len(&self.headers[c]))
            })
            .collect();
        let right: Vec<bool> = (0..self.headers.len()).map(|c| self.numeric(c)).collect();
        let line = |row: &[String]| {
            let padded = widths.iter().enumerate().map(|(c, &w)| {
                let s = row.get(c).map_or("", String::as_str);
                if right[c] {
                    format!(" {s:>w$} ")
                } else {
                    format!(" {s:<w$} ")
                }
            });
            format!("|{}|", padded.collect::<Vec<_>>().join("|"))
        };
        let rule = widths.iter().zip(&right).map(|(&w, &r)| {
            if r {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        });

        let mut out = vec![self.title.clone()];
        out.extend(self.notes.iter().cloned());
        out.push(String::new());
        out.push(line(&self.headers));
        out.push(format!("|{}|", rule.collect::<Vec<_>>().join("|")));
        out.extend(cells.iter().map(|r| line(r)));
        out.join("\n")
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::render).collect())
            .collect();
        f.write_str(&self.layout(&cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Cell::num(812.04, Some(Unit::Ms), 1), "812.0 ms")]
    #[case(Cell::num(95.0, Some(Unit::Percent), 0), "95 %")]
    #[case(Cell::num(3.0, None, 1), "3.0")]
    #[case(Cell::opt(None, Some(Unit::Mib), 1), "-")]
    #[case(Cell::text("a|b\nc"), "a\\|b c")]
    fn cells(#[case] cell: Cell, #[case] text: &str) {
        assert_eq!(cell.render(), text);
    }

    #[test]
    fn renders_aligned() {
        let mut t = Table::new("title", &["name", "value", "note"]);
        t.notes.push("from somewhere".into());
        t.rows.push(vec![
            Cell::text("a"),
            Cell::num(1.5, Some(Unit::Ms), 1),
            Cell::text("x"),
        ]);
        t.rows
            .push(vec![Cell::text("longer"), Cell::Missing, Cell::text("yz")]);
        assert_eq!(
            t.to_string(),
            "title\nfrom somewhere\n\n\
             | name   |  value | note |\n\
             |--------|-------:|------|\n\
             | a      | 1.5 ms | x    |\n\
             | longer |      - | yz   |"
        );
    }
}
