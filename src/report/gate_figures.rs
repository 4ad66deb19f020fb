//! Figures of what the gate compared, criterion-like: per gated metric, the
//! stored baseline beside this run's runs; per compared metric, a variant's
//! runs beside its reference's. Each shows both samples (their runs as dots
//! where the report kept them), their medians and 95 % intervals, and the
//! band within which a change passes; the caption says the change, its
//! interval and what it amounts to. Progress curves, as QEMU's guestperf
//! draws them, show how each run's memory went.

use super::figures::{draw_legend, COLOURS, FONT, MARK_COLOUR};
use crate::baseline::{Change, Estimate};
use crate::measure::{CaseResult, ProgressSample, Unit};
use crate::metrics::Better;
use crate::verdict::{Gate, VariantGate};
use anyhow::Result;
use plotters::prelude::*;

/// Two of these sit side by side on a laptop's page.
const WIDTH: u32 = 520;
const HEIGHT: u32 = 190;
const PROGRESS_WIDTH: u32 = 900;
const PROGRESS_HEIGHT: u32 = 300;
const REGRESSION: RGBColor = RGBColor(180, 35, 24);
const IMPROVEMENT: RGBColor = RGBColor(26, 127, 55);
const NOISE: RGBColor = RGBColor(31, 119, 180);
const BAND: RGBColor = RGBColor(232, 232, 232);

/// One sample of a figure's two.
struct Sample<'a> {
    name: String,
    estimate: Estimate,
    /// Empty where only the estimate was kept (a stored baseline).
    values: &'a [f64],
    colour: RGBColor,
}

/// A metric's two samples, and where a change stops passing.
struct Strip<'a> {
    caption: String,
    unit: Unit,
    samples: [Sample<'a>; 2],
    /// The values between which the second sample's median passes, drawn
    /// as a band.
    band: (f64, f64),
    band_label: String,
}

fn verdict_colour(change: Change) -> RGBColor {
    match change {
        Change::Regression => REGRESSION,
        Change::Improvement => IMPROVEMENT,
        Change::Noise => NOISE,
    }
}

/// What a change amounts to; `noise` says what a change that passes is.
fn verdict_word(change: Change, noise: &'static str) -> &'static str {
    match change {
        Change::Regression => "REGRESSION",
        Change::Improvement => "improvement",
        Change::Noise => noise,
    }
}

/// "metric: +x % [lo, hi]<also>: what it amounts to".
fn caption(metric: &str, (change, (lo, hi)): (f64, (f64, f64)), also: &str, word: &str) -> String {
    let pct = |x: f64| format!("{x:+.1} %");
    format!(
        "{metric}: {} [{}, {}]{also}: {word}",
        pct(change),
        pct(lo),
        pct(hi)
    )
}

/// The gated metric against its stored baseline; None where nothing was
/// compared (no baseline, or too few runs).
pub fn baseline_figure(gate: &Gate) -> Result<Option<String>> {
    let Some(c) = &gate.comparison else {
        return Ok(None);
    };
    let threshold = c.noise_threshold_pct / 100.0;
    let paced = gate
        .paced_to_mbit
        .map(|p| format!(", at the baseline's pace of {p:.0} Mbit/s"))
        .unwrap_or_default();
    let strip = Strip {
        caption: caption(
            gate.metric.label(),
            (c.change_pct, c.interval_pct),
            "",
            verdict_word(c.change, "noise"),
        ),
        unit: gate.unit,
        samples: [
            Sample {
                name: format!("baseline, {} runs", c.baseline.n),
                estimate: c.baseline,
                values: &[],
                colour: MARK_COLOUR,
            },
            Sample {
                name: format!("this run, {} runs{paced}", c.new.n),
                estimate: c.new,
                values: &gate.values,
                colour: verdict_colour(c.change),
            },
        ],
        band: (
            c.baseline.median * (1.0 - threshold),
            c.baseline.median * (1.0 + threshold),
        ),
        band_label: format!("noise threshold ±{:.0} %", c.noise_threshold_pct),
    };
    draw_strip(&strip).map(Some)
}

/// A variant's runs against its reference's; None where they could not be
/// compared.
pub fn variant_figure(gate: &VariantGate) -> Result<Option<String>> {
    let Some(c) = &gate.comparison else {
        return Ok(None);
    };
    let bound = c.bound_pct / 100.0;
    let limit = match gate.metric.0.better {
        Better::Higher => c.reference.median * (1.0 - bound),
        Better::Lower => c.reference.median * (1.0 + bound),
    };
    let strip = Strip {
        caption: caption(
            gate.metric.label(),
            (c.change_pct, c.interval_pct),
            &format!(", p = {:.3}", c.p_value),
            verdict_word(c.change, "no change beyond the bound"),
        ),
        unit: gate.unit,
        samples: [
            Sample {
                name: format!("{}, {} runs", gate.reference, c.reference.n),
                estimate: c.reference,
                values: &gate.reference_values,
                colour: MARK_COLOUR,
            },
            Sample {
                name: format!("{}, {} runs", gate.variant, c.variant.n),
                estimate: c.variant,
                values: &gate.variant_values,
                colour: verdict_colour(c.change),
            },
        ],
        band: (c.reference.median.min(limit), c.reference.median.max(limit)),
        band_label: format!("worse by up to {:.0} %: passes", c.bound_pct),
    };
    draw_strip(&strip).map(Some)
}

/// The two samples on the metric's axis, one row each.
fn draw_strip(strip: &Strip) -> Result<String> {
    let ends = strip
        .samples
        .iter()
        .flat_map(|s| {
            [s.estimate.lo, s.estimate.hi]
                .into_iter()
                .chain(s.values.iter().copied())
        })
        .chain([strip.band.0, strip.band.1]);
    let (lo, hi) = ends.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let margin = ((hi - lo) * 0.08).max(hi.abs() * 0.01).max(1e-9);
    let x = (lo - margin)..(hi + margin);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&strip.caption, (FONT, 13))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(10)
            .build_cartesian_2d(x.clone(), -0.6..1.9)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(6)
            .x_desc(match strip.unit {
                Unit::Percent => "% of one CPU",
                unit => unit.suffix(),
            })
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(&|v| format_tick(*v))
            .draw()?;
        let (band_lo, band_hi) = strip.band;
        chart.draw_series([Rectangle::new(
            [(band_lo, -0.45), (band_hi, 1.45)],
            BAND.filled(),
        )])?;
        chart.draw_series([Text::new(
            strip.band_label.clone(),
            (band_lo, 1.75),
            (FONT, 11).into_font().color(&MARK_COLOUR),
        )])?;
        for (row, s) in strip.samples.iter().enumerate() {
            let y = 1.0 - row as f64;
            let e = &s.estimate;
            chart.draw_series([PathElement::new(
                [(e.lo, y), (e.hi, y)],
                s.colour.stroke_width(3),
            )])?;
            chart.draw_series([PathElement::new(
                [(e.median, y - 0.25), (e.median, y + 0.25)],
                s.colour.stroke_width(3),
            )])?;
            chart.draw_series(
                s.values
                    .iter()
                    .map(|v| Circle::new((*v, y - 0.28), 3, s.colour.mix(0.6).filled())),
            )?;
            chart.draw_series([Text::new(
                s.name.clone(),
                (x.start, y + 0.42),
                (FONT, 12).into_font().color(&s.colour),
            )])?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A tick's value: whole from 100 up, else with one decimal.
fn format_tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Memory left to send over time, one line per run that reported its
/// progress, coloured by variant (by run where the case has none), as
/// QEMU's guestperf draws a migration's progress. None without progress.
pub fn progress_figure(result: &CaseResult) -> Result<Option<String>> {
    let variants: Vec<&str> = result
        .case
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    // From the first sample that saw the transfer: before it, the
    // toolstack reports nothing left because it has not counted yet.
    let drawn: Vec<(usize, &crate::measure::RunMeasurement, &[ProgressSample])> = result
        .runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let first = r.progress.iter().position(|p| p.remaining_mib > 0.0)?;
            let moving = &r.progress[first..];
            (moving.len() > 1).then_some((i, r, moving))
        })
        .collect();
    if drawn.is_empty() {
        return Ok(None);
    }
    let points = drawn.iter().flat_map(|(_, _, progress)| progress.iter());
    let (t0, t1, top) = points.fold((f64::INFINITY, 0.0f64, 1.0f64), |(t0, t1, top), p| {
        let t = p.t_ms as f64 / 1000.0;
        (t0.min(t), t1.max(t), top.max(p.remaining_mib))
    });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PROGRESS_WIDTH, PROGRESS_HEIGHT))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("memory left to send, each run", (FONT, 15))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(t0.min(t1)..t1.max(t0 + 1.0), 0.0..top * 1.3)?;
        chart
            .configure_mesh()
            .x_desc("s after the warning")
            .y_desc("MiB")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let mut labelled = vec![false; variants.len().max(1)];
        for (i, r, progress) in drawn {
            let which = r
                .variant
                .as_deref()
                .and_then(|name| variants.iter().position(|v| *v == name));
            let colour = COLOURS[which.unwrap_or(i) % COLOURS.len()];
            let series = chart.draw_series(LineSeries::new(
                progress
                    .iter()
                    .map(|p| (p.t_ms as f64 / 1000.0, p.remaining_mib)),
                colour.stroke_width(2),
            ))?;
            let legend = match which {
                Some(v) if !labelled[v] => {
                    labelled[v] = true;
                    Some(variants[v].to_string())
                }
                Some(_) => None,
                None => Some(format!("run {}", i + 1)),
            };
            if let Some(legend) = legend {
                series.label(legend).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::compare;
    use crate::metrics::{Metric, MetricRef};
    use crate::report::fixtures::{case, provenance, run};

    fn gate(values: Vec<f64>) -> Gate {
        let baseline = Estimate::of(&[2000.0, 2050.0, 1980.0, 2010.0, 2020.0]).unwrap();
        Gate {
            metric: MetricRef(Metric::by_key("total_time").unwrap()),
            unit: Unit::Ms,
            new: Estimate::of(&values).unwrap(),
            paced_to_mbit: Some(740.0),
            comparison: compare(baseline, &values, Better::Lower, 0.2),
            not_compared: None,
            values,
        }
    }

    /// The text elements of an SVG, as plotters writes them.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!("\n{text}\n</text>"))
    }

    #[test]
    fn a_regression_against_the_baseline_shows_both_samples_and_the_threshold() {
        let svg = baseline_figure(&gate(vec![3000.0, 3100.0, 2950.0]))
            .unwrap()
            .unwrap();
        assert!(
            has_text(&svg, "total time: +49.3 % [+45.1 %, +56.0 %]: REGRESSION"),
            "{svg}"
        );
        for text in [
            "baseline, 5 runs",
            "this run, 3 runs, at the baseline&apos;s pace of 740 Mbit/s",
            "noise threshold ±20 %",
        ] {
            assert!(has_text(&svg, text) || svg.contains(text), "{text}: {svg}");
        }
        assert_eq!(svg.matches("<circle").count(), 3, "this run's runs");
        assert!(svg.contains(&format!("{REGRESSION:?}")) || svg.contains("#B42318"));
    }

    #[test]
    fn nothing_compared_draws_nothing() {
        let mut g = gate(vec![2000.0]);
        g.comparison = None;
        assert!(baseline_figure(&g).unwrap().is_none());
    }

    #[test]
    fn a_variant_beside_its_reference() {
        let (reference_values, variant_values) = (
            vec![100.0, 101.0, 99.0, 100.0],
            vec![130.0, 131.0, 129.0, 130.0],
        );
        let g = VariantGate {
            metric: MetricRef(Metric::by_key("throughput").unwrap()),
            unit: Unit::Mbit,
            reference: "stock".into(),
            variant: "capped".into(),
            comparison: crate::ab::compare_variants(
                &reference_values,
                &variant_values,
                Better::Higher,
                0.1,
            ),
            reference_values,
            variant_values,
        };
        let svg = variant_figure(&g).unwrap().unwrap();
        assert!(svg.contains("stream throughput: +30.0 %"), "{svg}");
        assert!(svg.contains("improvement"), "{svg}");
        assert!(svg.contains("stock, 4 runs") && svg.contains("capped, 4 runs"));
        assert!(svg.contains("worse by up to 10 %: passes"));
        assert_eq!(svg.matches("<circle").count(), 8);
    }

    #[test]
    fn progress_curves_are_coloured_by_variant() {
        let mut result = CaseResult {
            case: case(),
            provenance: provenance(),
            calibration: Default::default(),
            held_unix_ms: None,
            runs: vec![],
        };
        assert!(progress_figure(&result).unwrap().is_none());
        for name in ["stock", "capped"] {
            result.case.variants.push(crate::case::Variant {
                name: name.into(),
                migration: result.case.migration.clone(),
            });
        }
        for (i, name) in ["stock", "capped", "capped", "stock"].iter().enumerate() {
            let mut r = run(2000.0, 100.0);
            r.variant = Some(name.to_string());
            r.progress = (0..5)
                .map(|k| crate::measure::ProgressSample {
                    t_ms: 1000 + 400 * k,
                    transferred_mib: 50.0 * k as f64,
                    remaining_mib: 256.0 - 50.0 * k as f64 - i as f64,
                    pass: 1,
                    dirty_rate_mib_s: None,
                    throughput_mbit: None,
                    expected_downtime_ms: None,
                })
                .collect();
            result.runs.push(r);
        }
        let svg = progress_figure(&result).unwrap().unwrap();
        // One legend entry per variant, not per run.
        assert_eq!(svg.matches("\nstock\n</text>").count(), 1, "{svg}");
        assert_eq!(svg.matches("\ncapped\n</text>").count(), 1, "{svg}");
    }
}
