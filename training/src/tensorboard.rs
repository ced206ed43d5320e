//! TensorBoard event files (`report_to: tensorboard`): the logged metrics as scalar
//! summaries, where HF's Trainer writes them (`logging_dir`, default `output_dir/runs`).
//!
//! The format is TFRecord framing around `tensorflow.Event` protocol buffers. Only the
//! few fields scalars need are written, encoded by hand: `Event{wall_time=1 (double),
//! step=2 (int64), file_version=3 (string), summary=5}`, `Summary{value=1 (repeated)}`,
//! `Summary.Value{tag=1 (string), simple_value=2 (float)}`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// CRC-32C (Castagnoli), the checksum of TFRecord framing.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// One `Event` message: the file version, or scalars at `step`.
pub fn event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(1 << 3 | 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        e.push(2 << 3);
        varint(&mut e, step as u64);
    }
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            v.push(2 << 3 | 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

/// `data` as one TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalar summaries to a new event file in a directory.
pub struct EventWriter {
    file: BufWriter<File>,
    pub path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<time>.<host>.<pid>` (a resumed run adds a file
    /// beside the earlier ones; TensorBoard reads them in order).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create logging_dir {}: {e}", dir.display()))?;
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now() as u64,
            std::process::id()
        ));
        let file = File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let mut w = Self {
            file: BufWriter::new(file),
            path,
        };
        w.write(&event(now(), 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(&record(data))?;
        // Flushed per event: a running job is readable, and a killed one loses nothing.
        self.file.flush()?;
        Ok(())
    }

    /// Scalars of one logging step, tagged as HF does (`train/loss`, `eval/loss`).
    pub fn scalars(&mut self, step: usize, values: &[(String, f32)]) -> anyhow::Result<()> {
        let v: Vec<(&str, f32)> = values.iter().map(|(k, x)| (k.as_str(), *x)).collect();
        self.write(&event(now(), step as i64, None, &v))
    }
}

/// The tags and values of one log-history entry: numbers only, `eval_x` as `eval/x`,
/// everything else under `train/` (HF's layout); `epoch` and `step` are not scalars.
pub fn entry_scalars(entry: &serde_json::Value) -> Vec<(String, f32)> {
    let Some(m) = entry.as_object() else {
        return vec![];
    };
    m.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "step" | "epoch"))
        .filter_map(|(k, v)| {
            let tag = match k.strip_prefix("eval_") {
                Some(rest) => format!("eval/{rest}"),
                None => format!("train/{k}"),
            };
            Some((tag, v.as_f64()? as f32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn records_frame_the_data() {
        let data = event(1.5, 7, None, &[("train/loss", 0.25)]);
        let r = record(&data);
        assert_eq!(
            u64::from_le_bytes(r[..8].try_into().unwrap()),
            data.len() as u64
        );
        assert_eq!(&r[12..12 + data.len()], &data[..]);
        // wall_time, then step 7 as a varint, then the summary.
        assert_eq!(data[0], 0x09);
        assert_eq!(&data[1..9], &1.5f64.to_le_bytes());
        assert_eq!(&data[9..11], &[0x10, 7]);
        assert_eq!(data[11], 0x2A);
    }

    #[test]
    fn entries_become_hf_style_tags() {
        let e = serde_json::json!({"step": 3, "epoch": 0.5, "loss": 1.25, "eval_loss": 2.0, "note": "x"});
        let mut s = entry_scalars(&e);
        s.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            s,
            vec![("eval/loss".into(), 2.0), ("train/loss".into(), 1.25)]
        );
    }
}
