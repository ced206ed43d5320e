//! The judge-relevant part of a seed-format YAML config (`templates.*`,
//! `self_judge_args.token_id_a/token_id_b`, `max_length`), derived with serde. The
//! training binary reads the same [`TemplatesSection`] inside its own, stricter view of
//! the whole file, so one file is parsed once either way.

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use super::template::{JudgeTemplate, Principle};
use super::JudgeError;
use self_judge_model::config_read::{opt_count, read};

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

/// One principle's judge template (`templates.judge.<name>`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipleSection {
    pub system: String,
    pub user: String,
    pub assistant: String,
}

/// `templates.decision_rationale`: the decision cue, and the rationale template of
/// UltraFeedback's per-principle judgments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRationale {
    pub decision: String,
    pub rationale: Option<String>,
}

/// The `templates` section of a seed-format config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesSection {
    /// A chat template overriding the checkpoint's.
    pub chat: Option<String>,
    /// The markers that start a user / assistant turn in rendered text (training).
    pub user: Option<String>,
    pub assistant: Option<String>,
    /// Drop the first token of each tokenized turn (training).
    pub skip_first_token: Option<bool>,
    /// Principles in file order.
    pub judge: IndexMap<String, PrincipleSection>,
    pub decision_rationale: Option<DecisionRationale>,
}

/// The keys of `self_judge_args` / `jsft_args` judging reads (the rest is training's).
#[derive(Debug, Default, Deserialize)]
struct JudgeArgs {
    #[serde(default, deserialize_with = "opt_count")]
    token_id_a: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    token_id_b: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    max_length: Option<usize>,
}

/// A whole config file as judging sees it.
#[derive(Debug, Deserialize)]
struct JudgeFile {
    templates: TemplatesSection,
    self_judge_args: Option<JudgeArgs>,
    jsft_args: Option<JudgeArgs>,
}

fn err(m: String) -> JudgeError {
    JudgeError::Config(m)
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

    /// Parses a YAML document. Keys outside `templates` that judging does not read are
    /// left to the training binary, which refuses unknown ones.
    pub fn from_yaml(text: &str) -> Result<Self, JudgeError> {
        let file: JudgeFile = read(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|e| err(format!("invalid config: {e}")))?
            .value;
        let args = [file.self_judge_args, file.jsft_args];
        let token_ids = match &args[0] {
            Some(a) => (a.token_id_a, a.token_id_b),
            None => (None, None),
        };
        let max_length = args.iter().flatten().find_map(|a| a.max_length);
        Self::from_sections(&file.templates, token_ids, max_length)
    }

    /// Builds the judge's config from a parsed `templates` section, the configured
    /// ` A`/` B` token ids (both or neither) and the prompt length limit.
    pub fn from_sections(
        templates: &TemplatesSection,
        token_ids: (Option<usize>, Option<usize>),
        max_length: Option<usize>,
    ) -> Result<Self, JudgeError> {
        let principles = templates
            .judge
            .iter()
            .map(|(name, p)| Principle {
                name: name.clone(),
                system: p.system.clone(),
                user: p.user.clone(),
                assistant: p.assistant.clone(),
            })
            .collect();
        let decision = templates
            .decision_rationale
            .as_ref()
            .map(|d| d.decision.clone());
        let template = JudgeTemplate::new(principles, decision)?;
        let token_ids = match token_ids {
            (Some(a), Some(b)) => {
                let id = |x: usize| {
                    u32::try_from(x)
                        .map_err(|_| err(format!("token id {x} is not a 32-bit token id")))
                };
                Some((id(a)?, id(b)?))
            }
            (None, None) => None,
            _ => {
                return Err(err(
                    "give both `self_judge_args.token_id_a` and `token_id_b`, or neither".into(),
                ))
            }
        };
        if max_length == Some(0) {
            return Err(err("`max_length` must be > 0".into()));
        }
        Ok(Self {
            chat_template: templates.chat.clone(),
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
