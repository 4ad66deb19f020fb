//! Figures of a run, drawn as SVG text for the HTML report: per case, CPU
//! and memory of both hosts over time with the moments of the migration
//! marked; per suite, total time and downtime per hypervisor and MTU as
//! grouped bars (on a log scale where they span more than ×20). Text is left to the SVG viewer's fonts (no font files).

use crate::case::{Case, Strategy};
use crate::landmarks::run_landmarks;
use crate::measure::{CaseResult, RunMeasurement, Timeline, Unit};
use crate::metrics::CaseSummary;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(super) const FONT: &str = "sans-serif";
const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 280;
/// Source and destination lines; bars in turn.
pub(super) const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
pub(super) const MARK_COLOUR: RGBColor = RGBColor(90, 90, 90);
/// Room above the highest value for the legend and the marks' labels.
const HEADROOM: f64 = 1.45;
/// Bars whose values span more than this factor are drawn on a log scale:
/// on a linear one, a Xen row's minutes flatten KVM's seconds to slivers.
const LOG_SPAN: f64 = 20.0;

/// The value axis of a bar panel: linear from 0, or log10 from the decade
/// below the smallest value. Bars are drawn in axis units.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Linear,
    /// The lowest decade shown (log10 of it).
    Log {
        floor: f64,
    },
}

impl Scale {
    /// The scale for `values` (positive figures).
    fn of(values: &[f64]) -> Scale {
        let positive = values.iter().copied().filter(|v| *v > 0.0);
        let min = positive.clone().fold(f64::INFINITY, f64::min);
        let max = positive.fold(0.0, f64::max);
        if min.is_finite() && max / min > LOG_SPAN {
            Scale::Log {
                floor: min.log10().floor(),
            }
        } else {
            Scale::Linear
        }
    }

    /// Where `value` sits on the axis.
    fn axis(self, value: f64) -> f64 {
        match self {
            Scale::Linear => value,
            Scale::Log { floor } => value.max(f64::MIN_POSITIVE).log10().max(floor),
        }
    }

    /// The axis's bottom.
    fn bottom(self) -> f64 {
        match self {
            Scale::Linear => 0.0,
            Scale::Log { floor } => floor,
        }
    }

    /// The axis's top, with room for the legend above `max`.
    fn top(self, max: f64) -> f64 {
        match self {
            Scale::Linear => max * HEADROOM,
            // The legend's room, as a linear axis keeps it, in decades.
            Scale::Log { floor } => {
                let top = max.log10();
                top + (top - floor) * (HEADROOM - 1.0)
            }
        }
    }

    /// The value an axis position stands for, as its label; on a log scale
    /// only whole decades are labelled.
    fn label(self, axis: f64) -> String {
        match self {
            Scale::Linear => format!("{axis:.0}"),
            Scale::Log { .. } if (axis - axis.round()).abs() < 1e-6 => {
                format!("{:.0}", 10f64.powf(axis.round()))
            }
            Scale::Log { .. } => String::new(),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Scale::Linear => unit.to_string(),
            Scale::Log { .. } => format!("{unit} (log scale)"),
        }
    }
}

/// A moment of one run, in ms after the warning.
#[derive(Clone, Debug, PartialEq)]
struct Mark {
    label: &'static str,
    t_ms: f64,
}

/// The moments of the migration itself: the warning, the first byte of
/// memory moving, the switch-over (the guest stops on the source) and the
/// guest running on the destination.
fn migration_marks(case: &Case, run: &RunMeasurement) -> Vec<Mark> {
    let mut marks = vec![Mark {
        label: "warning",
        t_ms: 0.0,
    }];
    if let Some(preparation) = run.phases.preparation_ms {
        marks.push(Mark {
            label: "transfer starts",
            t_ms: preparation,
        });
        // Post-copy switches over first and moves the memory afterwards.
        let live_transfer = match case.migration.strategy {
            Strategy::Postcopy => 0.0,
            _ => run.phases.memory_transfer_ms.unwrap_or(0.0),
        };
        marks.push(Mark {
            label: "switch-over",
            t_ms: preparation + live_transfer,
        });
    }
    if let Some(total) = run.total_time_ms {
        marks.push(Mark {
            label: "resumed",
            t_ms: total,
        });
    }
    marks
}

/// The completed run of median total time (1-based number, run): the one
/// the case figure shows.
fn median_run(runs: &[RunMeasurement]) -> Option<(usize, &RunMeasurement)> {
    let mut completed: Vec<(usize, &RunMeasurement)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.outcome.not_completed().is_none())
        .map(|(i, r)| (i + 1, r))
        .collect();
    completed.sort_by(|a, b| {
        let total = |r: &RunMeasurement| r.total_time_ms.unwrap_or(f64::INFINITY);
        total(a.1).total_cmp(&total(b.1))
    });
    completed.get(completed.len() / 2).copied()
}

/// One panel of the case figure: a quantity on both hosts.
struct Panel<'a> {
    title: &'static str,
    unit: Unit,
    /// (legend, colour, timeline), without the ones that stayed at zero;
    /// a host keeps its colour whether or not the other is drawn.
    lines: Vec<(&'static str, RGBColor, &'a Timeline)>,
    /// When the last of its lines settled.
    settled_ms: Option<f64>,
}

/// CPU and memory of the source and destination hosts' hypervisor over the
/// run of median total time (or the first run, if none completed), with the
/// migration's moments and the point where each panel's lines settled. None
/// without a sampled run.
pub fn case_figure(result: &CaseResult) -> Result<Option<String>> {
    // A case whose runs all failed still shows how its first one went.
    let shown = median_run(&result.runs)
        .map(|(number, run)| (number, run, "median total time"))
        .or_else(|| {
            let i = result.runs.iter().position(|r| !r.timelines.is_empty())?;
            Some((i + 1, &result.runs[i], "no run completed"))
        });
    let Some((number, run, why)) = shown else {
        return Ok(None);
    };
    let panel = |title, unit, names: [(&'static str, &'static str); 2]| {
        let lines: Vec<(&str, RGBColor, &Timeline)> = names
            .into_iter()
            .zip(COLOURS)
            .filter_map(|((legend, name), colour)| {
                let tl = run.timelines.iter().find(|tl| tl.name == name)?;
                tl.points
                    .iter()
                    .any(|p| p.1 != 0.0)
                    .then_some((legend, colour, tl))
            })
            .collect();
        let settled_ms = lines
            .iter()
            .filter_map(|(_, _, tl)| run_landmarks(&result.case, run, &tl.name))
            .map(|l| l.settled_at_ms as f64)
            .reduce(f64::max);
        Panel {
            title,
            unit,
            lines,
            settled_ms,
        }
    };
    let panels = [
        panel(
            "CPU of the hypervisor",
            Unit::Percent,
            [
                ("source", "cpu.source.hypervisor"),
                ("destination", "cpu.destination.hypervisor"),
            ],
        ),
        panel(
            "memory (RSS) of the hypervisor",
            Unit::Mib,
            [
                ("source", "memory.source.hypervisor"),
                ("destination", "memory.destination.hypervisor"),
            ],
        ),
    ];
    let times = panels
        .iter()
        .flat_map(|p| &p.lines)
        .flat_map(|(_, _, tl)| &tl.points)
        .map(|p| p.0 as f64 / 1000.0);
    let (t0, t1) = times.fold((0.0f64, 1.0f64), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let marks = migration_marks(&result.case, run);

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, 2 * PANEL_HEIGHT + 30)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(30);
        title.draw_text(
            &format!("run {number} of {} ({why})", result.runs.len()),
            &(FONT, 15).into_text_style(&title),
            (10, 8),
        )?;
        let (top, bottom) = body.split_vertically(PANEL_HEIGHT);
        for (area, panel) in [top, bottom].iter().zip(&panels) {
            draw_panel(area, panel, &marks, t0..t1)?;
        }
        root.present()?;
    }
    Ok(Some(svg))
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &Panel,
    marks: &[Mark],
    seconds: std::ops::Range<f64>,
) -> Result<()> {
    let top = panel
        .lines
        .iter()
        .flat_map(|(_, _, tl)| &tl.points)
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * HEADROOM;
    // Labels of marks in the right fifth end at their line, inside the plot.
    let right_fifth = seconds.end - (seconds.end - seconds.start) / 5.0;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, 15))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(seconds, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("s after the warning")
        .y_desc(match panel.unit {
            Unit::Percent => "% of one CPU".to_string(),
            unit => unit.suffix().to_string(),
        })
        .light_line_style(WHITE.mix(0.0))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for &(legend, colour, tl) in &panel.lines {
        chart
            .draw_series(LineSeries::new(
                tl.points.iter().map(|p| (p.0 as f64 / 1000.0, p.1)),
                colour.stroke_width(2),
            ))?
            .label(legend)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    let settled = panel.settled_ms.map(|t_ms| Mark {
        label: "settled",
        t_ms,
    });
    for (i, mark) in marks.iter().chain(&settled).enumerate() {
        let t = mark.t_ms / 1000.0;
        chart.draw_series([PathElement::new([(t, 0.0), (t, top)], MARK_COLOUR)])?;
        // Staggered, so that close marks keep their labels apart.
        let y = top * (0.97 - 0.08 * i as f64);
        let anchor = if t > right_fifth {
            HPos::Right
        } else {
            HPos::Left
        };
        chart.draw_series([Text::new(
            mark.label,
            (t, y),
            (FONT, 12)
                .into_font()
                .color(&MARK_COLOUR)
                .pos(Pos::new(anchor, VPos::Top)),
        )])?;
    }
    if !panel.lines.is_empty() {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

/// The legend of a chart's labelled series, framed, at `position`.
pub(super) fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(MARK_COLOUR)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}

/// Median total time and downtime of each case, grouped by hypervisor, one
/// bar per MTU (and workload, when the suite has several). None without
/// cases.
pub fn suite_figure(results: &[CaseResult]) -> Result<Option<String>> {
    if results.is_empty() {
        return Ok(None);
    }
    let mut hypervisors: Vec<&str> = vec![];
    for r in results {
        let name = r.case.hypervisor.name();
        if !hypervisors.contains(&name) {
            hypervisors.push(name);
        }
    }
    let one_workload = results
        .iter()
        .all(|r| r.case.workload.name == results[0].case.workload.name);
    let bar_label = |case: &Case| {
        if one_workload {
            format!("MTU {}", case.link.mtu)
        } else {
            format!("MTU {}, {}", case.link.mtu, case.workload.name)
        }
    };
    let mut bars: Vec<(u32, String)> = results
        .iter()
        .map(|r| (r.case.link.mtu, bar_label(&r.case)))
        .collect();
    // Largest MTU first, as the study orders its packet sizes.
    bars.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    bars.dedup();

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 2 * PANEL_HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(PANEL_HEIGHT);
        for (area, (title, key)) in [top, bottom].iter().zip([
            ("total migration time (median)", "total_time"),
            ("downtime, reported (median)", "downtime"),
        ]) {
            let value = |hypervisor: &str, bar: &str| {
                let r = results.iter().find(|r| {
                    r.case.hypervisor.name() == hypervisor && bar_label(&r.case) == bar
                })?;
                CaseSummary::of(&r.runs).get(key).map(|s| s.median)
            };
            let values: Vec<f64> = hypervisors
                .iter()
                .flat_map(|h| bars.iter().filter_map(|(_, bar)| value(h, bar)))
                .collect();
            let scale = Scale::of(&values);
            let top = scale.top(values.iter().copied().fold(1.0f64, f64::max));
            let n = hypervisors.len();
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 15))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5..n as f64 - 0.5, scale.bottom()..top)?;
            let names = hypervisors.clone();
            let group_name = move |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && (0.0..n as f64).contains(&i) {
                    names[i as usize].to_string()
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n + 1)
                .x_label_formatter(&group_name)
                .y_desc(scale.describe("ms"))
                .y_label_formatter(&|v| scale.label(*v))
                .draw()?;
            let width = 0.8 / bars.len() as f64;
            for (j, (_, bar)) in bars.iter().enumerate() {
                let colour = COLOURS[j % COLOURS.len()];
                let rects = hypervisors.iter().enumerate().filter_map(|(i, h)| {
                    let left = i as f64 - 0.4 + j as f64 * width;
                    Some(Rectangle::new(
                        [
                            (left, scale.bottom()),
                            (left + width * 0.9, scale.axis(value(h, bar)?)),
                        ],
                        colour.filled(),
                    ))
                });
                chart
                    .draw_series(rects)?
                    .label(bar.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                    });
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        root.present()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, failed, provenance, run};

    fn result(runs: Vec<RunMeasurement>) -> CaseResult {
        CaseResult {
            case: case(),
            provenance: provenance(),
            calibration: Default::default(),
            held_unix_ms: None,
            runs,
        }
    }

    fn with_phases(mut r: RunMeasurement) -> RunMeasurement {
        r.phases.preparation_ms = Some(300.0);
        r.phases.memory_transfer_ms = Some(1500.0);
        r
    }

    #[test]
    fn marks_follow_the_phases() {
        let r = with_phases(run(2000.0, 100.0));
        let t: Vec<(&str, f64)> = migration_marks(&case(), &r)
            .iter()
            .map(|m| (m.label, m.t_ms))
            .collect();
        assert_eq!(
            t,
            [
                ("warning", 0.0),
                ("transfer starts", 300.0),
                ("switch-over", 1800.0),
                ("resumed", 2000.0)
            ]
        );
        let mut postcopy = case();
        postcopy.migration.strategy = Strategy::Postcopy;
        assert_eq!(migration_marks(&postcopy, &r)[2].t_ms, 300.0);
    }

    #[test]
    fn the_median_run_is_shown() {
        let runs = vec![
            run(3000.0, 1.0),
            failed("timed out", true),
            run(1000.0, 1.0),
            run(2000.0, 1.0),
        ];
        assert_eq!(median_run(&runs).map(|(n, _)| n), Some(4));
        assert_eq!(median_run(&[failed("timed out", true)]), None);
    }

    #[test]
    fn case_figure_has_both_panels_and_every_mark() {
        let svg = case_figure(&result(vec![with_phases(run(2000.0, 100.0))]))
            .unwrap()
            .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "CPU of the hypervisor",
            "memory (RSS) of the hypervisor",
            "warning",
            "transfer starts",
            "switch-over",
            "resumed",
            "settled",
            "source",
        ] {
            assert!(
                svg.contains(&format!("\n{text}\n</text>")),
                "{text} missing"
            );
        }
        assert!(case_figure(&result(vec![failed("timed out", true)]))
            .unwrap()
            .is_none());
        let mut sampled_failure = failed("timed out", true);
        sampled_failure.timelines = run(2000.0, 100.0).timelines;
        let svg = case_figure(&result(vec![sampled_failure]))
            .unwrap()
            .unwrap();
        assert!(svg.contains("\nrun 1 of 1 (no run completed)\n"), "{svg}");
    }

    #[test]
    fn suite_figure_groups_by_hypervisor() {
        let mut xen = result(vec![run(3000.0, 200.0)]);
        xen.case.hypervisor = crate::case::Hypervisor::row("xen-pv");
        let mut kvm_1500 = result(vec![run(1000.0, 50.0)]);
        kvm_1500.case.link.mtu = 1500;
        let svg = suite_figure(&[result(vec![run(2000.0, 100.0)]), kvm_1500, xen])
            .unwrap()
            .unwrap();
        for text in [
            "kvm-fv",
            "xen-pv",
            "MTU 1500",
            "MTU 128",
            "downtime, reported (median)",
        ] {
            assert!(
                svg.contains(&format!("\n{text}\n</text>")),
                "{text} missing"
            );
        }
        assert!(svg.matches("<rect").count() > 6);
        assert!(!svg.contains("log scale"), "3000 against 1000 ms: linear");
        assert!(suite_figure(&[]).unwrap().is_none());
    }

    #[test]
    fn bars_spanning_more_than_twenty_fold_are_drawn_on_a_log_scale() {
        let mut xen = result(vec![run(240_000.0, 2000.0)]);
        xen.case.hypervisor = crate::case::Hypervisor::row("xen-pv");
        let svg = suite_figure(&[result(vec![run(2000.0, 100.0)]), xen])
            .unwrap()
            .unwrap();
        assert!(svg.contains("ms (log scale)"), "{svg}");
        assert_eq!(Scale::of(&[2000.0, 240_000.0]), Scale::Log { floor: 3.0 });
        let log = Scale::Log { floor: 3.0 };
        assert_eq!(log.label(log.axis(100_000.0)), "100000");
        assert_eq!(log.label(4.5), "", "only whole decades are labelled");
        assert_eq!(log.axis(10.0), 3.0, "below the floor, a bar is empty");
        assert_eq!(Scale::of(&[100.0, 1900.0]), Scale::Linear);
    }
}
