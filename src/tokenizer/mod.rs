//! Tokenizers (HF `tokenizer.json` or rebuilt from GGUF metadata) and chat templates.

pub mod chat;
pub mod error;
pub mod gguf;

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use error::TokenizerError;

/// A tokenizer together with the special tokens the engine needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The EOS string (used to strip a rendered judge prompt, SPEC §2).
    pub eos_token: Option<String>,
    /// The BOS string passed to chat templates.
    pub bos_token: Option<String>,
    /// Every token id that ends generation.
    pub eos_ids: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("eos_token", &self.eos_token)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

/// Reads a special-token entry that HF writes either as a string or `{"content": ...}`.
fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Wraps a tokenizer; `eos_token` is resolved to ids and merged with `extra_eos_ids`.
    pub fn new(
        inner: Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        extra_eos_ids: &[u32],
    ) -> Self {
        let mut eos_ids: Vec<u32> = extra_eos_ids.to_vec();
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        Self {
            inner,
            eos_token,
            bos_token,
            eos_ids,
        }
    }

    /// Loads `tokenizer.json` and `tokenizer_config.json` from a HF directory. Returns the
    /// tokenizer and the checkpoint's chat template, if any.
    pub fn from_hf_dir(
        dir: &Path,
        config_eos: &[u32],
    ) -> Result<(Self, Option<String>), TokenizerError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::Build(format!(
                "{} is missing",
                path.display()
            )));
        }
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::Build(format!("{}: {e}", path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                TokenizerError::Build(format!("{} is not valid JSON: {e}", cfg_path.display()))
            })?,
            Err(_) => Value::Null,
        };
        let template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take the default one.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        // transformers 5 may keep the template in its own file.
        let template =
            template.or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
        let mut eos_ids = config_eos.to_vec();
        if let Ok(t) = std::fs::read_to_string(dir.join("generation_config.json")) {
            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                match v.get("eos_token_id") {
                    Some(Value::Number(n)) => eos_ids.extend(n.as_u64().map(|x| x as u32)),
                    Some(Value::Array(a)) => {
                        eos_ids.extend(a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)))
                    }
                    _ => {}
                }
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let tok = Self::new(
            inner,
            special_token(cfg.get("bos_token")),
            special_token(cfg.get("eos_token")),
            &eos_ids,
        );
        Ok((tok, template))
    }

    /// The underlying HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; `special` adds what the post-processor adds (BOS, ...).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        Ok(self
            .inner
            .encode(text, special)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, optionally dropping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Id of an exact token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
