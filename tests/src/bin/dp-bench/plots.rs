//! The report's charts, as SVG next to report.md: how ours compares with the reference
//! per metric, and the published-port scale curve of both sides.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::{coord::ranged1d::SegmentValue, prelude::*};

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const REFERENCE: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const NFTABLES: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

fn drawing_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// One horizontal bar per metric: how many times better ours is than the reference
/// (its ratio, inverted where lower is better), with the line at 1 where they are equal.
pub fn advantages(path: &Path, bars: &[(String, f64)]) -> Result<()> {
    let height = 90 + 26 * bars.len() as u32;
    let root = SVGBackend::new(path, (1280, height)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error)?;
    let max = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ours against the Docker-style reference: times better (> 1: ours is better)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(560)
        .build_cartesian_2d(0.0..max, (0..bars.len()).into_segmented())
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_desc("times better than the reference")
        .draw()
        .map_err(drawing_error)?;
    chart
        .draw_series(
            Histogram::horizontal(&chart)
                .style(OURS.filled())
                .margin(4)
                .data(bars.iter().enumerate().map(|(i, b)| (i, if b.1.is_finite() { b.1 } else { 0.0 }))),
        )
        .map_err(drawing_error)?;
    chart
        .draw_series(LineSeries::new([(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)], BLACK))
        .map_err(drawing_error)?;
    root.present().map_err(drawing_error)
}

/// Connections per second through a published port as more ports are published, one
/// line per side (label, the figure at each size): ours should stay flat, as should
/// nftables with its map, while iptables walks one more DNAT rule per port.
pub fn scale_curve(path: &Path, sizes: &[usize], sides: &[(&str, Vec<f64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error)?;
    let max = sides.iter().flat_map(|(_, v)| v).copied().filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "new TCP connections/s to a published port, with N other ports published",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..sizes.len()).into_segmented(), 0.0..max)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_labels(sizes.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                sizes.get(*i).map(|s| s.to_string()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_desc("other published ports")
        .y_desc("connections/s")
        .draw()
        .map_err(drawing_error)?;
    for ((label, values), color) in sides.iter().zip([OURS, REFERENCE, NFTABLES]) {
        let label = *label;
        let points: Vec<_> =
            values.iter().enumerate().map(|(i, v)| (SegmentValue::CenterOf(i), *v)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(drawing_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(drawing_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(drawing_error)?;
    root.present().map_err(drawing_error)
}

#[cfg(test)]
mod tests {
    #[test]
    fn charts_carry_every_label_and_both_sides() {
        let dir = std::env::temp_dir().join(format!("dp-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bars = [("1. c2c: UDP pps".to_string(), 1.7), ("4. scale: conn/s".to_string(), 4.3)];
        super::advantages(&dir.join("a.svg"), &bars).unwrap();
        super::scale_curve(
            &dir.join("s.svg"),
            &[0, 100, 1000],
            &[
                ("ours", vec![9000.0, 8900.0, 8800.0]),
                ("iptables", vec![9000.0, 7000.0, 2000.0]),
                ("nftables", vec![8500.0, 8500.0, 8400.0]),
            ],
        )
        .unwrap();
        let a = std::fs::read_to_string(dir.join("a.svg")).unwrap();
        let s = std::fs::read_to_string(dir.join("s.svg")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(a.starts_with("<svg") && a.contains("1. c2c: UDP pps") && a.contains("4. scale: conn/s"));
        assert!(s.contains("ours") && s.contains("iptables") && s.contains("nftables") && s.contains("1000"));
    }
}
