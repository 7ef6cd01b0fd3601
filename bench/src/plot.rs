//! The latency-vs-throughput plot (SVG): consensus setups (blocks/s against p50, with a bar up
//! to p99) on the left, the kv store's windows (tx/s against p50 and p99) on the right.

use crate::stats::Sample;
use plotters::prelude::*;
use std::path::Path;

/// One point: group letter, short label, unit, the medians.
pub struct Point {
    pub group: char,
    pub label: String,
    pub sample: Sample,
}

fn color(group: char) -> RGBColor {
    match group {
        'a' => RGBColor(31, 119, 180),
        'b' => RGBColor(44, 160, 44),
        'c' => RGBColor(148, 103, 189),
        'd' => RGBColor(214, 39, 40),
        _ => RGBColor(255, 127, 14),
    }
}

fn y_range(points: &[&Point]) -> (f64, f64) {
    let lo = points.iter().map(|p| p.sample.p50_ms).filter(|x| x.is_finite()).fold(f64::MAX, f64::min);
    let hi = points.iter().map(|p| p.sample.p99_ms).filter(|x| x.is_finite()).fold(0.0, f64::max);
    ((lo / 2.0).max(0.01), (hi * 2.0).max(1.0))
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::combinators::LogCoord<f64>>,
>;

fn mesh(chart: &mut Chart<'_, '_>, x: &str, y: &str) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_mesh()
        .light_line_style(RGBColor(245, 245, 245))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.1}") })
        .x_desc(x)
        .y_desc(y)
        .draw()?;
    Ok(())
}

pub fn write(path: &Path, title: &str, points: &[Point]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (left, right) = root.split_horizontally(600);

    let consensus: Vec<&Point> = points.iter().filter(|p| p.group != 'e' && p.sample.rate > 0.0).collect();
    if !consensus.is_empty() {
        let xmax = consensus.iter().map(|p| p.sample.rate).fold(0.0, f64::max) * 1.25;
        let (ylo, yhi) = y_range(&consensus);
        let mut chart = ChartBuilder::on(&left)
            .caption("consensus: blocks/s vs commit latency", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, (ylo..yhi).log_scale())?;
        mesh(&mut chart, "blocks/s (dot: p50, bar up to p99)", "commit latency, ms (log)")?;
        for p in &consensus {
            let c = color(p.group);
            let (x, s) = (p.sample.rate, p.sample);
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, s.p50_ms), (x, s.p99_ms)], c)))?;
            chart.draw_series(std::iter::once(Circle::new((x, s.p50_ms), 5, c.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                p.label.clone(),
                (x, s.p50_ms * 0.8),
                ("sans-serif", 12).into_font().color(&c),
            )))?;
        }
    }

    let kv: Vec<&Point> = points.iter().filter(|p| p.group == 'e' && p.sample.rate > 0.0).collect();
    if !kv.is_empty() {
        let xmax = kv.iter().map(|p| p.sample.rate).fold(0.0, f64::max) * 1.25;
        let (ylo, yhi) = y_range(&kv);
        let mut chart = ChartBuilder::on(&right)
            .caption("kv_cluster (4 validators, fsync): tx/s vs latency", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, (ylo..yhi).log_scale())?;
        mesh(&mut chart, "committed tx/s (labels: client window)", "submit-to-commit, ms (log)")?;
        let c = color('e');
        chart
            .draw_series(LineSeries::new(
                kv.iter().map(|p| (p.sample.rate, p.sample.p50_ms)),
                c.stroke_width(2),
            ))?
            .label("p50")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(kv.iter().map(|p| (p.sample.rate, p.sample.p99_ms)), grey))?
            .label("p99")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
        for p in &kv {
            chart.draw_series(std::iter::once(Circle::new(
                (p.sample.rate, p.sample.p50_ms),
                4,
                c.filled(),
            )))?;
            chart.draw_series(std::iter::once(Circle::new(
                (p.sample.rate, p.sample.p99_ms),
                3,
                grey.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                p.label.clone(),
                (p.sample.rate, p.sample.p50_ms * 0.75),
                ("sans-serif", 12),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
