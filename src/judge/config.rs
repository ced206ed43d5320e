//! The judge-relevant part of a seed-format YAML config (`templates.*`,
//! `self_judge_args.token_id_a/token_id_b`, `max_length`). The training binary reads the
//! same files with its own, stricter view of the training sections.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::template::{JudgeTemplate, Principle};
use super::JudgeError;

/// What judging needs from a config file.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// `templates.chat`: overrides the checkpoint's chat template when present.
    pub chat_template: Option<String>,
    pub template: JudgeTemplate,
    /// `self_judge_args.token_id_a` / `token_id_b`, when given.
    pub token_ids: Option<(u32, u32)>,
    /// `self_judge_args.max_length` (or `jsft_args.max_length`).
    pub max_length: Option<usize>,
}

fn err(m: String) -> JudgeError {
    JudgeError::Config(m)
}

fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(Value::String(key.to_string()))
        .filter(|v| !v.is_null())
}

fn string(m: &Mapping, key: &str, ctx: &str) -> Result<String, JudgeError> {
    match get(m, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(err(format!(
            "`{ctx}.{key}` must be a string, got {other:?}"
        ))),
        None => Err(err(format!("`{ctx}.{key}` is missing"))),
    }
}

fn mapping<'a>(m: &'a Mapping, key: &str, ctx: &str) -> Result<Option<&'a Mapping>, JudgeError> {
    match get(m, key) {
        Some(Value::Mapping(x)) => Ok(Some(x)),
        Some(other) => Err(err(format!(
            "`{ctx}{key}` must be a mapping, got {other:?}"
        ))),
        None => Ok(None),
    }
}

fn uint(m: &Mapping, key: &str, ctx: &str) -> Result<Option<u64>, JudgeError> {
    match get(m, key) {
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(err(format!(
            "`{ctx}.{key}` must be a non-negative integer, got {other:?}"
        ))),
        None => Ok(None),
    }
}

impl JudgeConfig {
    /// Reads and validates a YAML config file.
    pub fn from_file(path: &Path) -> Result<Self, JudgeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| match e {
            JudgeError::Config(m) => err(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a YAML document.
    pub fn from_yaml(text: &str) -> Result<Self, JudgeError> {
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| err(format!("invalid YAML: {e}")))?;
        let root = doc
            .as_mapping()
            .ok_or_else(|| err("the config must be a mapping".into()))?;
        let templates =
            mapping(root, "templates", "")?.ok_or_else(|| err("`templates` is missing".into()))?;
        let chat_template = match get(templates, "chat") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(err(format!(
                    "`templates.chat` must be a string, got {other:?}"
                )))
            }
        };
        let judge = mapping(templates, "judge", "templates.")?
            .ok_or_else(|| err("`templates.judge` is missing".into()))?;
        let mut principles = Vec::with_capacity(judge.len());
        for (name, body) in judge {
            let name = name
                .as_str()
                .ok_or_else(|| err(format!("principle name {name:?} must be a string")))?;
            let ctx = format!("templates.judge.{name}");
            let body = body.as_mapping().ok_or_else(|| {
                err(format!(
                    "`{ctx}` must be a mapping with system, user, assistant"
                ))
            })?;
            principles.push(Principle {
                name: name.to_string(),
                system: string(body, "system", &ctx)?,
                user: string(body, "user", &ctx)?,
                assistant: string(body, "assistant", &ctx)?,
            });
        }
        let decision = match mapping(templates, "decision_rationale", "templates.")? {
            Some(dr) => Some(string(dr, "decision", "templates.decision_rationale")?),
            None => None,
        };
        let template = JudgeTemplate::new(principles, decision)?;
        let sj = mapping(root, "self_judge_args", "")?;
        let token_ids = match sj {
            Some(sj) => match (
                uint(sj, "token_id_a", "self_judge_args")?,
                uint(sj, "token_id_b", "self_judge_args")?,
            ) {
                (Some(a), Some(b)) => Some((a as u32, b as u32)),
                (None, None) => None,
                _ => {
                    return Err(err(
                        "give both `self_judge_args.token_id_a` and `token_id_b`, or neither"
                            .into(),
                    ))
                }
            },
            None => None,
        };
        let mut max_length = None;
        for section in ["self_judge_args", "jsft_args"] {
            if let Some(s) = mapping(root, section, "")? {
                if let Some(m) = uint(s, "max_length", section)? {
                    max_length.get_or_insert(m as usize);
                }
            }
        }
        if max_length == Some(0) {
            return Err(err("`max_length` must be > 0".into()));
        }
        Ok(Self {
            chat_template,
            template,
            token_ids,
            max_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_seed_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        for (name, n_principles, has_decision) in [
            ("hh_jsft.yaml", 1, false),
            ("hh_self_judge.yaml", 1, false),
            ("uf_jsft.yaml", 1, false),
            ("uf_self_judge.yaml", 1, false),
            ("uf_jsft_pr.yaml", 4, true),
            ("uf_self_judge_pr.yaml", 4, true),
        ] {
            let c = JudgeConfig::from_file(&dir.join(name)).unwrap();
            assert_eq!(c.template.principles.len(), n_principles, "{name}");
            assert_eq!(c.template.decision.is_some(), has_decision, "{name}");
            assert!(c.chat_template.is_some(), "{name}");
            assert_eq!(c.max_length, Some(2048), "{name}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = JudgeConfig::from_yaml("templates:\n  judge:\n    helpful:\n      system: s\n      user: '{context}{response_a}{response_b}'\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("templates.judge.helpful.assistant` is missing"),
            "{e}"
        );
        let e = JudgeConfig::from_yaml("templates:\n  judge:\n    helpful:\n      system: s\n      user: '{context}{response_a}'\n      assistant: a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`helpful`") && e.contains("{response_b}"), "{e}");
        let e = JudgeConfig::from_yaml("templates: {judge: {h: {system: s, user: '{context}{response_a}{response_b}', assistant: a}}}\nself_judge_args: {token_id_a: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_id_b"), "{e}");
    }
}
