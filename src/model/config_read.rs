//! Reading derived (`#[derive(Deserialize)]`) configs so that every error names its key
//! path (`training_args.learning_rate`, `datasets[0].path`), and keys a type does not
//! declare are reported rather than silently dropped. Shared by `config.json`, the judge
//! YAML and the training YAML.

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A value and the paths of the keys it ignored (keys the type does not declare).
pub struct Read<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

/// Formats a serde_ignored path as the configs' users write keys: `a.b`, `a[0].c`.
fn path_string(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => match path_string(parent) {
            s if s.is_empty() => key.clone(),
            s => format!("{s}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

/// One sentence for an error at `path`: serde's "missing field `x`" becomes
/// "`path.x` is missing"; a message of ours ("must be ...") follows the key.
fn describe(path: &str, msg: &str) -> String {
    let path = if path == "." { "" } else { path };
    // serde_yaml_ng puts the path (or its parent's) in front of its own messages.
    let msg = match msg.split_once(": ") {
        Some((p, rest)) if !p.is_empty() && path.starts_with(p) => rest,
        _ => msg,
    };
    let join = |k: &str| match path {
        "" => k.to_string(),
        p => format!("{p}.{k}"),
    };
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("`{}` is missing", join(name));
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The path already ends at the unknown key.
        let name = rest.split('`').next().unwrap_or(rest);
        let full = if path.ends_with(name) {
            path.to_string()
        } else {
            join(name)
        };
        return format!("unknown key `{full}`");
    }
    // Our derived types' names mean nothing to the person writing the file.
    let msg = match msg.split_once("expected struct ") {
        Some((head, tail)) => {
            let at = tail.find(" at line ").map_or("", |i| &tail[i..]);
            let head = head.replace("invalid length", "a list of length");
            format!("{head}expected a mapping{at}")
        }
        None => msg.to_string(),
    };
    let msg = msg.as_str();
    match path {
        "" => msg.to_string(),
        p if msg.starts_with("must ") => format!("`{p}` {msg}"),
        p => format!("`{p}`: {msg}"),
    }
}

/// Deserializes `T`, collecting ignored keys; the error is one sentence naming the key.
pub fn read<'de, T, D>(de: D) -> Result<Read<T>, String>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    let mut ignored = Vec::new();
    let mut record = |p: serde_ignored::Path| ignored.push(path_string(&p));
    let de = serde_ignored::Deserializer::new(de, &mut record);
    let value = serde_path_to_error::deserialize(de)
        .map_err(|e| describe(&e.path().to_string(), &e.inner().to_string()))?;
    Ok(Read { value, ignored })
}

/// A number, also from a string: YAML 1.1 readers (PyYAML, so the seed) read `2e-5`
/// as a string and the seed's configs rely on it.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(f64),
    Text(String),
}

fn number_from(v: NumberOrText) -> Result<f64, String> {
    match v {
        NumberOrText::Number(x) => Ok(x),
        NumberOrText::Text(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("must be a number, got {s:?}")),
    }
}

/// `deserialize_with` for `Option<f64>` fields (absent or null is `None`).
pub fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<NumberOrText>::deserialize(d)
        .map_err(|_| de::Error::custom("must be a number"))?
    {
        None => Ok(None),
        Some(v) => number_from(v).map(Some).map_err(de::Error::custom),
    }
}

/// One value or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// `deserialize_with` for `Option<Vec<String>>` fields that take one string or a list.
pub fn opt_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Option::<OneOrMany<String>>::deserialize(d)
        .map_err(|_| de::Error::custom("must be a string or a list of strings"))?
    {
        None => Ok(None),
        Some(OneOrMany::One(x)) => Ok(Some(vec![x])),
        Some(OneOrMany::Many(v)) => Ok(Some(v)),
    }
}

/// `deserialize_with` for `Option<Vec<u32>>` fields that take one token id or a list.
pub fn opt_token_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    match Option::<OneOrMany<u32>>::deserialize(d)
        .map_err(|_| de::Error::custom("must be a token id or a list of token ids"))?
    {
        None => Ok(None),
        Some(OneOrMany::One(x)) => Ok(Some(vec![x])),
        Some(OneOrMany::Many(v)) => Ok(Some(v)),
    }
}

/// `deserialize_with` for `Option<usize>` fields: a non-negative whole number (`3`,
/// `3.0` or `"3"`).
pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match Option::<NumberOrText>::deserialize(d)
        .map_err(|_| de::Error::custom("must be a non-negative integer"))?
    {
        None => Ok(None),
        Some(v) => {
            let x = number_from(v).map_err(de::Error::custom)?;
            if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 * u32::MAX as f64 {
                Ok(Some(x as usize))
            } else {
                Err(de::Error::custom(format!(
                    "must be a non-negative integer, got {x}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default, deserialize_with = "opt_number")]
        rate: Option<f64>,
        #[serde(default, deserialize_with = "opt_count")]
        steps: Option<usize>,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        section: Inner,
        #[serde(default)]
        items: Vec<Inner>,
    }

    fn err(json: &str) -> String {
        read::<Outer, _>(&mut serde_json::Deserializer::from_str(json))
            .err()
            .unwrap()
    }

    #[test]
    fn errors_name_the_key_path() {
        assert_eq!(err(r#"{"section": {}}"#), "`section.name` is missing");
        assert!(err(r#"{"section": {"name": "n", "rate": "fast"}}"#)
            .starts_with("`section.rate` must be a number, got \"fast\""));
        assert!(err(r#"{"section": {"name": "n", "steps": 2.5}}"#)
            .starts_with("`section.steps` must be a non-negative integer, got 2.5"));
        assert!(
            err(r#"{"section": {"name": "n"}, "items": [{"name": "a", "x": 1}]}"#)
                .starts_with("unknown key `items[0].x`"),
        );
        assert!(err(r#"{"section": {"name": 3}}"#).starts_with("`section.name`: invalid type"));
        let e = err(r#"{"section": 1}"#);
        assert!(
            e.starts_with("`section`: invalid type: integer `1`, expected a mapping at line 1"),
            "{e}"
        );
        let e = err(r#"{"section": [1]}"#);
        assert!(
            e.starts_with("`section`: a list of length")
                && e.contains("expected a mapping at line 1"),
            "{e}"
        );
    }

    #[test]
    fn numbers_from_text_and_ignored_keys() {
        let json = r#"{"section": {"name": "n", "rate": "2e-5", "steps": "3"}, "extra": {"a": 1}}"#;
        let r = read::<Outer, _>(&mut serde_json::Deserializer::from_str(json)).unwrap();
        assert_eq!(r.value.section.rate, Some(2e-5));
        assert_eq!(r.value.section.steps, Some(3));
        assert_eq!(r.value.section.name, "n");
        assert!(r.value.items.is_empty());
        assert_eq!(r.ignored, vec!["extra".to_string()]);
    }
}
