//! Judge-augmented SFT examples from HH-RLHF rows (SPEC §4): one SFT example on the
//! chosen conversation, and per principle two judgment examples (both orders, targets
//! ` A` and ` B`) whose loss falls on the verdict token and the EOS only.

use self_judge_judge::template::CompiledPrinciple;
use self_judge_judge::JudgeTemplate;
use self_judge_tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};

use super::hh::HhPair;
use super::mask::{marker, mask_labels, truncate_left};
use crate::config::Role;
use crate::loss::Example;

/// Everything needed to turn rows into examples.
pub struct JsftBuilder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub chat: &'a ChatTemplate,
    pub judge: &'a JudgeTemplate,
    pub max_length: usize,
    user: Vec<u32>,
    assistant: Vec<u32>,
    /// Kept so judge cues are turned into markers the same way as the role markers.
    pub(super) skip_first_token: bool,
    /// `templates.decision_rationale.rationale` (with `{position}`), set by
    /// [`JsftBuilder::with_rationale`]; needed for UltraFeedback rationale rows.
    pub(super) rationale: Option<String>,
    /// Which examples rows contribute ([`JsftBuilder::with_role`]).
    pub(super) role: Role,
}

/// Counts of what was built and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub rows: usize,
    pub sft: usize,
    pub judgments: usize,
    /// Examples dropped because their markers could not be matched.
    pub unmaskable: usize,
    /// Rows that could not be parsed (with the first error).
    pub bad_rows: usize,
    pub first_error: Option<String>,
    /// UltraFeedback rows without completions (skipped, as the seed does).
    pub empty_rows: usize,
    /// Judgment pairs not built because no strict comparison existed (per row for a
    /// single-pair dataset, per row and principle with rationales).
    pub no_pair: usize,
}

impl BuildStats {
    /// Counts a row that could not be parsed, keeping the first error (1-based row).
    pub fn bad_row(&mut self, index: usize, error: impl std::fmt::Display) {
        self.bad_rows += 1;
        self.first_error
            .get_or_insert_with(|| format!("row {}: {error}", index + 1));
    }
}

/// The chat of one judgment: the principle's system text, the user turn holding the
/// context and both responses, and the assistant turn `cue + continuation`.
pub(super) fn judgment_messages(
    p: &CompiledPrinciple,
    context: &str,
    a: &str,
    b: &str,
    continuation: &str,
) -> [ChatMessage; 3] {
    [
        ChatMessage::new("system", p.principle.system.clone()),
        ChatMessage::new("user", p.user_text(context, a, b)),
        ChatMessage::new("assistant", format!("{}{continuation}", p.cue)),
    ]
}

impl<'a> JsftBuilder<'a> {
    /// Encodes the role markers (`templates.user`, `templates.assistant`).
    pub fn new(
        tokenizer: &'a TextTokenizer,
        chat: &'a ChatTemplate,
        judge: &'a JudgeTemplate,
        max_length: usize,
        user: &str,
        assistant: &str,
        skip_first_token: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            user: marker(tokenizer, user, skip_first_token)?,
            assistant: marker(tokenizer, assistant, skip_first_token)?,
            tokenizer,
            chat,
            judge,
            max_length,
            skip_first_token,
            rationale: None,
            role: Role::Both,
        })
    }

    /// Sets the rationale template (`templates.decision_rationale.rationale`, see
    /// [`crate::config::TrainConfig::rationale_template`]); UltraFeedback rows need it when the judge
    /// template has a decision text.
    pub fn with_rationale(mut self, template: Option<String>) -> Self {
        self.rationale = template;
        self
    }

    /// Sets which examples the following rows contribute (SFT, judgments or both).
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    pub(super) fn finish(&self, mut ids: Vec<u32>, mut labels: Vec<i64>) -> Example {
        truncate_left(&mut ids, &mut labels, self.max_length);
        Example {
            input_ids: ids,
            labels,
        }
    }

    /// The SFT example of a conversation (rendered without BOS, as the seed does).
    pub fn sft(&self, messages: &[ChatMessage]) -> anyhow::Result<Option<Example>> {
        let t = self.tokenizer;
        let text = self.chat.render(
            messages,
            false,
            t.bos_token.as_deref(),
            t.eos_token.as_deref(),
        )?;
        let ids = t.encode(&text, false)?;
        Ok(mask_labels(&ids, &self.user, &self.assistant)
            .ok()
            .map(|l| self.finish(ids, l)))
    }

    /// The two judgment examples of one principle: (better, worse) in position A with
    /// target ` A`, and swapped with target ` B`.
    pub fn judgments(
        &self,
        principle: usize,
        context: &str,
        better: &str,
        worse: &str,
    ) -> anyhow::Result<Vec<Option<Example>>> {
        let p = &self.judge.principles[principle];
        // The seed drops the first token of the judge marker too (`skip_first_token`).
        let cue = marker(self.tokenizer, &p.cue, self.skip_first_token)?;
        let t = self.tokenizer;
        let mut out = Vec::with_capacity(2);
        for (a, b, letter) in [(better, worse, " A"), (worse, better, " B")] {
            let messages = judgment_messages(p, context, a, b, letter);
            let mut text = self.chat.render(
                &messages,
                false,
                t.bos_token.as_deref(),
                t.eos_token.as_deref(),
            )?;
            // As the seed: a render that ends with the EOS string loses it, so only the
            // verdict token is learned (ChatML ends with "<|im_end|>\n" and keeps it).
            if let Some(eos) = t.eos_token.as_deref() {
                if let Some(stripped) = text.strip_suffix(eos) {
                    text.truncate(stripped.len());
                }
            }
            out.push(self.after_cue(&text, &cue)?);
        }
        Ok(out)
    }

    /// A judgment text encoded with special tokens (as the seed) and learned after the
    /// last occurrence of the cue; `None` when the cue cannot be found.
    pub(super) fn after_cue(&self, text: &str, cue: &[u32]) -> anyhow::Result<Option<Example>> {
        let ids = self.tokenizer.encode(text, true)?;
        Ok(mask_labels(&ids, &[], cue)
            .ok()
            .map(|l| self.finish(ids, l)))
    }

    /// All examples of HH rows: SFT on `chosen`, judgments on (chosen, rejected) answers.
    pub fn hh(
        &self,
        rows: &[serde_json::Value],
        system: &str,
        stats: &mut BuildStats,
    ) -> anyhow::Result<Vec<Example>> {
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            stats.rows += 1;
            let pair = match HhPair::from_row(row, system) {
                Ok(p) => p,
                Err(e) => {
                    stats.bad_rows += 1;
                    stats
                        .first_error
                        .get_or_insert(format!("row {}: {e}", i + 1));
                    continue;
                }
            };
            if self.role.sft() {
                match self.sft(&pair.chosen)? {
                    Some(e) => {
                        stats.sft += 1;
                        out.push(e);
                    }
                    None => stats.unmaskable += 1,
                }
            }
            let (better, worse) = pair.answers();
            let principles = if self.role.judgments() {
                self.judge.principles.len()
            } else {
                0
            };
            for p in 0..principles {
                for e in self.judgments(p, &pair.context, better, worse)? {
                    match e {
                        Some(e) => {
                            stats.judgments += 1;
                            out.push(e);
                        }
                        None => stats.unmaskable += 1,
                    }
                }
            }
        }
        Ok(out)
    }
}
