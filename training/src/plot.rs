//! Training curves as a PNG (no plotting library or font files needed): one panel per
//! logged metric against the step, with a tiny built-in 3x5 bitmap font for labels.

use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

const W: usize = 800;
const PANEL_H: usize = 260;
const LEFT: usize = 90;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 40;
const SCALE: usize = 2;

/// 3x5 glyphs, one string of 15 bits per character (rows top to bottom).
const FONT: &[(char, &str)] = &[
    ('0', "111101101101111"),
    ('1', "010110010010111"),
    ('2', "111001111100111"),
    ('3', "111001111001111"),
    ('4', "101101111001001"),
    ('5', "111100111001111"),
    ('6', "111100111101111"),
    ('7', "111001001001001"),
    ('8', "111101111101111"),
    ('9', "111101111001111"),
    ('.', "000000000000010"),
    ('-', "000000111000000"),
    ('+', "000010111010000"),
    ('/', "001001010100100"),
    ('_', "000000000000111"),
    (':', "000010000010000"),
    ('a', "000011101101011"),
    ('b', "100110101101110"),
    ('c', "000011100100011"),
    ('d', "001011101101011"),
    ('e', "000010111100011"),
    ('f', "011100110100100"),
    ('g', "000011101011110"),
    ('h', "100110101101101"),
    ('i', "010000010010010"),
    ('j', "001000001101010"),
    ('k', "100101110110101"),
    ('l', "110010010010111"),
    ('m', "000111111101101"),
    ('n', "000110101101101"),
    ('o', "000010101101010"),
    ('p', "000110101110100"),
    ('q', "000011101011001"),
    ('r', "000011100100100"),
    ('s', "000011110011110"),
    ('t', "010111010010011"),
    ('u', "000101101101011"),
    ('v', "000101101101010"),
    ('w', "000101101111111"),
    ('x', "000101010010101"),
    ('y', "000101011001110"),
    ('z', "000111011110111"),
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if thick {
                self.set(x, y + 1, c);
                self.set(x + 1, y, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (k, ch) in s.to_lowercase().chars().enumerate() {
            let Some((_, bits)) = FONT.iter().find(|(g, _)| *g == ch) else {
                continue;
            };
            for (i, b) in bits.bytes().enumerate() {
                if b == b'1' {
                    let (gx, gy) = (i % 3, i / 3);
                    for ox in 0..SCALE {
                        for oy in 0..SCALE {
                            self.set(
                                (x + k * 4 * SCALE + gx * SCALE + ox) as i64,
                                (y + gy * SCALE + oy) as i64,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws every key of `keys` found in `history` (entries with `step`) into `path`; keys
/// without data are left out, and nothing is written when none has data.
pub fn history_png(history: &[Value], keys: &[&str], path: &Path) -> anyhow::Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = keys
        .iter()
        .map(|k| {
            let pts = history
                .iter()
                .filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(*k)?.as_f64()?)))
                .filter(|(_, y)| y.is_finite())
                .collect::<Vec<_>>();
            (*k, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let h = PANEL_H * series.len();
    let mut cv = Canvas {
        w: W,
        h,
        px: vec![255; W * h * 3],
    };
    let grey = [200, 200, 200];
    let black = [0, 0, 0];
    for (p, (name, pts)) in series.iter().enumerate() {
        let top = p * PANEL_H + TOP;
        let bottom = (p + 1) * PANEL_H - BOTTOM;
        let (left, right) = (LEFT, W - RIGHT);
        let (xmin, xmax) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, q| (a.0.min(q.0), a.1.max(q.0)));
        let (mut ymin, mut ymax) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, q| (a.0.min(q.1), a.1.max(q.1)));
        if ymax - ymin < 1e-12 {
            ymin -= 0.5;
            ymax += 0.5;
        }
        let xspan = (xmax - xmin).max(1.0);
        let px = |x: f64| left as f64 + (x - xmin) / xspan * (right - left) as f64;
        let py = |y: f64| bottom as f64 - (y - ymin) / (ymax - ymin) * (bottom - top) as f64;
        for t in 0..=4 {
            let y = ymin + (ymax - ymin) * t as f64 / 4.0;
            let yy = py(y) as i64;
            cv.line((left as i64, yy), (right as i64, yy), grey, false);
            cv.text(4, (yy - 5).max(0) as usize, &label(y), black);
            let x = xmin + xspan * t as f64 / 4.0;
            let xx = px(x) as i64;
            cv.line((xx, top as i64), (xx, bottom as i64), grey, false);
            cv.text(
                (xx as usize).saturating_sub(8),
                bottom + 8,
                &format!("{}", x.round()),
                black,
            );
        }
        cv.line(
            (left as i64, top as i64),
            (left as i64, bottom as i64),
            black,
            false,
        );
        cv.line(
            (left as i64, bottom as i64),
            (right as i64, bottom as i64),
            black,
            false,
        );
        cv.text(left, top - 20, &format!("{name}  vs step"), black);
        let blue = [31, 119, 180];
        for w in pts.windows(2) {
            let a = (px(w[0].0) as i64, py(w[0].1) as i64);
            let b = (px(w[1].0) as i64, py(w[1].1) as i64);
            cv.line(a, b, blue, true);
        }
        if pts.len() == 1 {
            let (x, y) = (px(pts[0].0) as i64, py(pts[0].1) as i64);
            cv.line((x - 3, y), (x + 3, y), blue, true);
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), W as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&cv.px)?;
    writer.finish()?;
    Ok(())
}
