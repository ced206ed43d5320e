//! Typed reads of one key of a YAML mapping, each error naming `section.key`.

use serde_yaml_ng::{Mapping, Value};

pub(crate) fn num(m: &Mapping, sec: &str, k: &str) -> anyhow::Result<Option<f64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        // YAML 1.1 readers (PyYAML) parse "2e-5" as a string; accept it as the seed does.
        Some(Value::String(s)) => s
            .parse::<f64>()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("`{sec}.{k}` must be a number, got {s:?}")),
        Some(other) => anyhow::bail!("`{sec}.{k}` must be a number, got {other:?}"),
    }
}

pub(crate) fn int(m: &Mapping, sec: &str, k: &str) -> anyhow::Result<Option<usize>> {
    match num(m, sec, k)? {
        None => Ok(None),
        Some(x) if x >= 0.0 && x.fract() == 0.0 => Ok(Some(x as usize)),
        Some(x) => anyhow::bail!("`{sec}.{k}` must be a non-negative integer, got {x}"),
    }
}

pub(crate) fn string(m: &Mapping, sec: &str, k: &str) -> anyhow::Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => anyhow::bail!("`{sec}.{k}` must be a string, got {other:?}"),
    }
}

pub(crate) fn boolean(m: &Mapping, sec: &str, k: &str) -> anyhow::Result<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => anyhow::bail!("`{sec}.{k}` must be true or false, got {other:?}"),
    }
}
