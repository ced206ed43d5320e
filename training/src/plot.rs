//! Training curves as a PNG: one panel per logged metric against the step, drawn with
//! `plotters` and the embedded DejaVu Sans Mono font (`training/assets`, its licence
//! beside it), so axes and labels read the same on any machine.

use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

const W: u32 = 900;
const PANEL_H: u32 = 280;
const FONT: &str = "self-judge-mono";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    anyhow::ensure!(ok, "the embedded plot font cannot be read");
    Ok(())
}

/// The points `(step, value)` of each key that has any, in key order.
fn series<'k>(history: &[Value], keys: &[&'k str]) -> Vec<(&'k str, Vec<(f64, f64)>)> {
    keys.iter()
        .map(|k| {
            let pts = history
                .iter()
                .filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(*k)?.as_f64()?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect::<Vec<_>>();
            (*k, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// A range that contains `lo..=hi` with a margin (and is never empty).
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = (hi - lo).abs().max(hi.abs() * 1e-3).max(1e-9);
    (lo - 0.05 * span)..(hi + 0.05 * span)
}

fn draw(buf: &mut [u8], h: u32, series: &[(&str, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let root = BitMapBackend::with_buffer(buf, (W, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((series.len(), 1));
    for (area, (name, pts)) in panels.iter().zip(series) {
        let (x0, x1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let last = pts.last().map_or(0.0, |p| p.1);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{name}  (last {last:.4})"), (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(padded(x0, x1), padded(y0, y1))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if pts.len() == 1 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Draws `keys` of `history` (HF `log_history` entries) to `path`; nothing is written
/// when no key has a value.
pub fn history_png(history: &[Value], keys: &[&str], path: &Path) -> anyhow::Result<()> {
    let series = series(history, keys);
    if series.is_empty() {
        return Ok(());
    }
    register_font()?;
    let h = PANEL_H * series.len() as u32;
    let mut buf = vec![255u8; (W * h * 3) as usize];
    draw(&mut buf, h, &series)?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), W, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.width, info.height, buf)
    }

    #[test]
    fn one_panel_per_metric_with_a_curve_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let history: Vec<Value> = (1..=20)
            .map(|s| serde_json::json!({"step": s, "loss": 2.0 / s as f64, "rewards/margins": s as f64 * 0.1}))
            .collect();
        history_png(&history, &["loss", "rewards/margins", "absent"], &path).unwrap();
        let (w, h, px) = decode(&path);
        assert_eq!(
            (w, h),
            (W, 2 * PANEL_H),
            "two panels: `absent` has no points"
        );
        let blue = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            px[i + 2] > 150 && px[i] < 100 && px[i + 1] < 100
        };
        let dark = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            px[i] < 90 && px[i + 1] < 90 && px[i + 2] < 90
        };
        for panel in 0..2 {
            let rows = panel * PANEL_H..(panel + 1) * PANEL_H;
            let curve = rows
                .clone()
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| blue(x, y))
                .count();
            assert!(curve > 200, "panel {panel}: {curve} curve pixels");
            // Caption text in the top strip, tick labels left of the plot.
            let caption = (panel * PANEL_H..panel * PANEL_H + 36)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| dark(x, y))
                .count();
            let ticks = rows
                .flat_map(|y| (0..70).map(move |x| (x, y)))
                .filter(|&(x, y)| dark(x, y))
                .count();
            assert!(
                caption > 50 && ticks > 50,
                "panel {panel}: caption {caption}, ticks {ticks}"
            );
        }
        let empty = dir.path().join("none.png");
        history_png(&history, &["absent"], &empty).unwrap();
        assert!(!empty.exists());
    }
}
