//! Judge prompt construction (SPEC §2 steps 1–3) and the A/B token ids.

use super::template::{CompiledPrinciple, JudgeTemplate};
use super::JudgeError;
use self_judge_tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};

/// The two orders a pair is judged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `response_a` in position A.
    Ab,
    /// Swapped: `response_b` in position A.
    Ba,
}

/// Renders and tokenizes judge prompts for one tokenizer and chat template.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    chat: std::sync::Arc<ChatTemplate>,
    tokenizer: std::sync::Arc<TextTokenizer>,
    max_length: usize,
    /// Tokens the tokenizer adds around any text (e.g. BOS); kept on left truncation.
    special_prefix: Vec<u32>,
    /// Cut long prompts from the left (the seed's behaviour) or refuse them.
    truncate: bool,
}

impl PromptBuilder {
    /// `max_length` bounds every prompt; longer ones lose tokens on the left.
    pub fn new(
        chat: ChatTemplate,
        tokenizer: TextTokenizer,
        max_length: usize,
    ) -> Result<Self, JudgeError> {
        if max_length < 2 {
            return Err(JudgeError::Config(format!(
                "max_length {max_length} is too small"
            )));
        }
        let special_prefix = tokenizer.encode("", true)?;
        Ok(Self {
            chat: std::sync::Arc::new(chat),
            tokenizer: std::sync::Arc::new(tokenizer),
            max_length,
            special_prefix,
            truncate: true,
        })
    }

    /// Refuse prompts longer than `max_length` instead of truncating them.
    pub fn set_truncate(&mut self, truncate: bool) {
        self.truncate = truncate;
    }

    /// The length limit.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The rendered prompt for one principle and order: system, user (the template
    /// filled in), and the cue as a partial assistant turn, cut right after the cue.
    pub fn render(
        &self,
        p: &CompiledPrinciple,
        context: &str,
        a: &str,
        b: &str,
        order: Order,
    ) -> Result<String, JudgeError> {
        let (first, second) = match order {
            Order::Ab => (a, b),
            Order::Ba => (b, a),
        };
        let messages = [
            ChatMessage::new("system", p.principle.system.clone()),
            ChatMessage::new("user", p.user_text(context, first, second)),
            ChatMessage::new("assistant", p.cue.clone()),
        ];
        let t = &self.tokenizer;
        Ok(self
            .chat
            .render_continue(&messages, t.bos_token.as_deref(), t.eos_token.as_deref())?)
    }

    /// Tokenizes a rendered prompt, truncating from the left to `max_length` while
    /// keeping the tokenizer's leading special tokens (as HF left truncation does).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>, JudgeError> {
        let ids = self.tokenizer.encode(prompt, true)?;
        if ids.len() <= self.max_length {
            return Ok(ids);
        }
        if !self.truncate {
            return Err(JudgeError::TooLong(format!(
                "a judge prompt has {} tokens, over the limit of {} (truncation is disabled)",
                ids.len(),
                self.max_length
            )));
        }
        let keep = self.special_prefix.len();
        let mut out = self.special_prefix.clone();
        let body = &ids[keep..];
        out.extend_from_slice(&body[body.len() - (self.max_length - keep)..]);
        Ok(out)
    }

    /// Token ids of one judgment prompt.
    pub fn prompt_ids(
        &self,
        p: &CompiledPrinciple,
        context: &str,
        a: &str,
        b: &str,
        order: Order,
    ) -> Result<Vec<u32>, JudgeError> {
        self.tokenize(&self.render(p, context, a, b, order)?)
    }

    /// Derives the ids of ` A` and ` B` as the model sees them after each cue:
    /// tokenizing `cue + " A"` must add exactly one token to the cue's tokens, and every
    /// principle must agree.
    pub fn derive_token_ids(&self, template: &JudgeTemplate) -> Result<(u32, u32), JudgeError> {
        let mut found: Option<(u32, u32)> = None;
        for p in &template.principles {
            let cue = self.tokenizer.encode(&p.cue, false)?;
            let mut pair = [0u32; 2];
            for (slot, letter) in pair.iter_mut().zip([" A", " B"]) {
                let ids = self
                    .tokenizer
                    .encode(&format!("{}{letter}", p.cue), false)?;
                if ids.len() != cue.len() + 1 || !ids.starts_with(&cue) {
                    return Err(JudgeError::Config(format!(
                        "after the cue of principle `{}`, `{letter}` is not exactly one token for this tokenizer",
                        p.principle.name
                    )));
                }
                *slot = ids[ids.len() - 1];
            }
            let pair = (pair[0], pair[1]);
            match found {
                None => found = Some(pair),
                Some(f) if f != pair => {
                    return Err(JudgeError::Config(format!(
                        "principles disagree on the A/B token ids ({f:?} vs {pair:?} for `{}`)",
                        p.principle.name
                    )))
                }
                _ => {}
            }
        }
        let ids = found.ok_or_else(|| JudgeError::Config("no principle".into()))?;
        if ids.0 == ids.1 {
            return Err(JudgeError::Config(
                "` A` and ` B` map to the same token".into(),
            ));
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Principle;

    /// A byte-level BPE tokenizer without merges: " A" is two tokens (`Ġ`, `A`).
    fn unmerged_tokenizer() -> TextTokenizer {
        let chars = ["A", "n", "s", "w", "e", "r", ":", "Ġ", "B", "x"];
        let vocab: serde_json::Map<String, serde_json::Value> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i.into()))
            .collect();
        let doc = serde_json::json!({
            "version": "1.0", "added_tokens": [], "normalizer": null, "post_processor": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "vocab": vocab, "merges": []},
        });
        TextTokenizer::new(doc.to_string().parse().unwrap(), None, None, &[])
    }

    #[test]
    fn letter_that_is_not_one_token_is_refused() {
        let chat =
            ChatTemplate::new("{% for m in messages %}{{ m['content'] }}{% endfor %}").unwrap();
        let b = PromptBuilder::new(chat, unmerged_tokenizer(), 64).unwrap();
        let t = JudgeTemplate::new(
            vec![Principle {
                name: "h".into(),
                system: "s".into(),
                user: "{context}{response_a}{response_b}".into(),
                assistant: "Answer:".into(),
            }],
            None,
        )
        .unwrap();
        let e = b.derive_token_ids(&t).unwrap_err().to_string();
        assert!(e.contains("` A` is not exactly one token"), "{e}");
    }
}
