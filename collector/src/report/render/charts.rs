//! The report's charts as inline SVG (plotters' SVG backend into a string): a resource's
//! trend, a host's availability strip, findings by level. Pure: data in, markup out; the
//! text is left to the reader's fonts (no font backend compiled in).

use jiff::tz::TimeZone;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format;
use crate::report::model::{Outage, Trend};

const INK: RGBColor = RGBColor(0x4a, 0x55, 0x68);
const GRID: RGBColor = RGBColor(0xe2, 0xe8, 0xf0);
const LINE: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const P95: RGBColor = RGBColor(0xdd, 0x6b, 0x20);
const UP: RGBColor = RGBColor(0x38, 0xa1, 0x69);
const DOWN: RGBColor = RGBColor(0xc5, 0x30, 0x30);
/// L1..L4, most severe first.
const LEVELS: [RGBColor; 4] = [
    RGBColor(0xc5, 0x30, 0x30),
    RGBColor(0xdd, 0x6b, 0x20),
    RGBColor(0xd6, 0x9e, 0x2e),
    RGBColor(0x31, 0x82, 0xce),
];
const FONT: &str = "sans-serif";

type Fail = Box<dyn std::error::Error>;

/// A trend over the period `[from, to)` (Unix ms): its points as an area, lines broken
/// where points are missing, and its p95 as a thin line.
pub fn trend(t: &Trend, from: i64, to: i64, tz: &TimeZone) -> Result<String, String> {
    // Rates are drawn in the binary unit their maximum reads best in, so the axis steps
    // are round numbers of that unit (5 MiB/s, not 4.8).
    let max = t.points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (scale, unit) = match t.unit.as_str() {
        "percent" => (1.0, "%".to_owned()),
        "bytes/s" => binary_unit(max),
        other => (1.0, other.to_owned()),
    };
    draw(720, 200, |root| {
        let top = if t.unit == "percent" {
            100.0
        } else {
            nice_ceiling(max / scale)
        };
        let mut chart = ChartBuilder::on(root)
            .margin(6)
            .margin_right(14)
            .x_label_area_size(24)
            .y_label_area_size(if t.unit == "percent" { 44 } else { 76 })
            .build_cartesian_2d(from..to.max(from + 1), 0.0..top)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(GRID.stroke_width(1))
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&|ms| format::axis_date(*ms, tz))
            .y_label_formatter(&|v| match unit.as_str() {
                "%" => format!("{v:.0}%"),
                u if v.fract() == 0.0 => format!("{v:.0} {u}"),
                u => format!("{v:.1} {u}"),
            })
            .label_style((FONT, 13).into_font().color(&INK))
            .draw()?;
        for segment in segments(&t.points) {
            chart.draw_series(
                AreaSeries::new(
                    segment.iter().map(|&(x, y)| (x, y / scale)),
                    0.0,
                    LINE.mix(0.15),
                )
                .border_style(LINE.stroke_width(2)),
            )?;
        }
        if let Some(p95) = t.p95 {
            let p95 = p95 / scale;
            chart.draw_series(LineSeries::new(
                [(from, p95), (to, p95)],
                P95.stroke_width(1),
            ))?;
        }
        Ok(())
    })
}

/// The divisor and name of the binary unit of rates that `max` reads best in.
fn binary_unit(max: f64) -> (f64, String) {
    const UNITS: [&str; 5] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    let mut scale = 1.0;
    let mut i = 0;
    while max / scale >= 1024.0 && i + 1 < UNITS.len() {
        scale *= 1024.0;
        i += 1;
    }
    (scale, UNITS[i].to_owned())
}

/// A strip across the period: green where the host reported, red over its outages.
pub fn availability(
    outages: &[(i64, i64)],
    from: i64,
    to: i64,
    tz: &TimeZone,
) -> Result<String, String> {
    draw(720, 64, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(6)
            .margin_right(14)
            .x_label_area_size(22)
            .y_label_area_size(8)
            .build_cartesian_2d(from..to.max(from + 1), 0.0..1.0)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .light_line_style(TRANSPARENT)
            .bold_line_style(TRANSPARENT)
            .axis_style(GRID.stroke_width(1))
            .x_labels(8)
            .x_label_formatter(&|ms| format::axis_date(*ms, tz))
            .label_style((FONT, 13).into_font().color(&INK))
            .draw()?;
        chart.draw_series([Rectangle::new(
            [(from, 0.15), (to, 0.85)],
            UP.mix(0.75).filled(),
        )])?;
        // An outage of a few minutes is narrower than a pixel: give it one, or it vanishes.
        let min_width = (to - from) / 700;
        chart.draw_series(outages.iter().map(|&(a, b)| {
            Rectangle::new([(a, 0.05), (b.max(a + min_width), 0.95)], DOWN.filled())
        }))?;
        Ok(())
    })
}

/// Outages as Unix ms spans, for [`availability`].
pub fn outage_spans(outages: &[Outage]) -> Result<Vec<(i64, i64)>, jiff::Error> {
    outages
        .iter()
        .map(|o| {
            let a = o.from.parse::<jiff::Timestamp>()?.as_millisecond();
            let b = o.to.parse::<jiff::Timestamp>()?.as_millisecond();
            Ok((a, b))
        })
        .collect()
}

/// Bars per level, with their counts above them.
pub fn by_level(counts: &[(String, u64)]) -> Result<String, String> {
    draw(360, 180, |root| {
        let top = counts.iter().map(|c| c.1).max().unwrap_or(0).max(1) as f64 * 1.25;
        let n = counts.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(22)
            .y_label_area_size(30)
            .build_cartesian_2d(0.0..n, 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(GRID.stroke_width(1))
            .y_labels(4)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13).into_font().color(&INK))
            .draw()?;
        let style = |size| {
            (FONT, size)
                .into_font()
                .color(&INK)
                .pos(Pos::new(HPos::Center, VPos::Bottom))
        };
        for (i, (level, count)) in counts.iter().enumerate() {
            let x = i as f64;
            let color = LEVELS[i.min(LEVELS.len() - 1)];
            chart.draw_series([Rectangle::new(
                [(x + 0.2, 0.0), (x + 0.8, *count as f64)],
                color.filled(),
            )])?;
            chart.draw_series([Text::new(
                count.to_string(),
                (x + 0.5, *count as f64 + top * 0.02),
                style(13),
            )])?;
            // The level's name under its bar, in the label area.
            let (px, _) = chart.backend_coord(&(x + 0.5, 0.0));
            let (_, bottom) = chart.plotting_area().get_pixel_range();
            root.draw(&Text::new(level.clone(), (px, bottom.end + 16), style(12)))?;
        }
        Ok(())
    })
}

fn draw(
    width: u32,
    height: u32,
    plot: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), Fail>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        plot(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Runs of points with no gap: a step more than three times the usual one is a gap
/// (the model leaves missing points out).
fn segments(points: &[(i64, f64)]) -> Vec<&[(i64, f64)]> {
    let mut steps: Vec<i64> = points
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0)
        .collect();
    steps.sort_unstable();
    let Some(&usual) = steps.get(steps.len() / 2) else {
        return if points.is_empty() {
            Vec::new()
        } else {
            vec![points]
        };
    };
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i].0 - points[i - 1].0 > usual * 3 {
            out.push(&points[start..i]);
            start = i;
        }
    }
    out.push(&points[start..]);
    out
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_lines() {
        let pts: Vec<(i64, f64)> = [0, 5, 10, 15, 60, 65, 70]
            .iter()
            .map(|&t| (t, 1.0))
            .collect();
        let segs = segments(&pts);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].len(), 4);
        assert_eq!(segs[1].len(), 3);
        assert_eq!(segments(&[(1, 1.0)]).len(), 1);
        assert!(segments(&[]).is_empty());
    }

    #[test]
    fn axis_tops() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(binary_unit(500.0), (1.0, "B/s".to_owned()));
        assert_eq!(binary_unit(9.0e6), (1024.0 * 1024.0, "MiB/s".to_owned()));
    }
}
