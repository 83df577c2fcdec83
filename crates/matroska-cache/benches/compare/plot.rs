//! The fan-out plot: invalidation time against the number of dependents, log-log, for both
//! backends and their baselines.

use std::path::Path;

use plotters::prelude::*;

use crate::fanout::FanOut;

/// One line: its label, colour and (dependents, seconds) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Writes the SVG to `path`. Only single-threaded rows are plotted.
pub fn fanout(rows: &[FanOut], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let series: Vec<Series> = [
        ("redis", false, "Redis backend: invalidate", RED),
        (
            "redis",
            true,
            "raw redis: UNLINK in batches of 1,000",
            MAGENTA,
        ),
        ("memory", false, "memory backend: invalidate", BLUE),
        ("memory", true, "moka: invalidate per key", CYAN),
    ]
    .into_iter()
    .map(|(backend, baseline, label, color)| {
        let points = rows
            .iter()
            .filter(|r| r.backend == backend && r.threads == 1)
            .map(|r| {
                let t = if baseline { r.base } else { r.ours };
                (r.dependents as f64, t.as_secs_f64())
            })
            .collect();
        (label, color, points)
    })
    .filter(|(_, _, points): &Series| !points.is_empty())
    .collect();
    let all = series.iter().flat_map(|(_, _, p)| p.iter());
    let (x_min, x_max) = all.clone().fold((f64::MAX, f64::MIN), |(lo, hi), &(x, _)| {
        (lo.min(x), hi.max(x))
    });
    let (y_min, y_max) = all.fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| {
        (lo.min(y), hi.max(y))
    });

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Fan-out invalidation time", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            (y_min / 2.0..y_max * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("dependents")
        .y_desc("seconds")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()?;
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
