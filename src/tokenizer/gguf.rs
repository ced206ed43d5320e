//! Rebuilds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`) by
//! writing the equivalent `tokenizer.json` document and letting `tokenizers` parse it.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use serde_json::json;
use tokenizers::Tokenizer;

use super::error::TokenizerError;
use super::TextTokenizer;

/// A GGUF file's metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
pub type Metadata = HashMap<String, Value>;

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(meta: &Metadata, key: &str) -> Result<Vec<String>, TokenizerError> {
    match meta.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(TokenizerError::Build(format!("`{key}` holds a non-string"))),
            })
            .collect(),
        _ => Err(TokenizerError::Build(format!("GGUF lacks `{key}`"))),
    }
}

fn meta_str<'a>(meta: &'a Metadata, key: &str) -> Option<&'a str> {
    match meta.get(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn id(meta: &Metadata, key: &str) -> Option<u32> {
    meta.get(key).and_then(|v| v.to_u32().ok())
}

/// The pre-tokenizer llama.cpp names by `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Result<serde_json::Value, TokenizerError> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
        other => {
            return Err(TokenizerError::Build(format!(
                "GGUF pre-tokenizer `{other}` is not supported (supported: smollm, gpt2, default, llama-bpe, qwen2)"
            )))
        }
    })
}

/// Builds the tokenizer and returns it with the GGUF's chat template, if any.
pub fn from_gguf(meta: &Metadata) -> Result<(TextTokenizer, Option<String>), TokenizerError> {
    let model = meta_str(meta, "tokenizer.ggml.model").unwrap_or("<none>");
    if model != "gpt2" {
        return Err(TokenizerError::Build(format!(
            "GGUF tokenizer model `{model}` is not supported (supported: gpt2 byte-level BPE)"
        )));
    }
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let merges = strings(meta, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.to_i32().map(i64::from).unwrap_or(1))
            .collect(),
        _ => vec![1; tokens.len()],
    };
    let pre = pre_tokenizer(meta_str(meta, "tokenizer.ggml.pre").unwrap_or("default"))?;
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            matches!(
                types.get(*i),
                Some(&TOKEN_TYPE_CONTROL | &TOKEN_TYPE_USER_DEFINED)
            )
        })
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types[i] == TOKEN_TYPE_CONTROL})
        })
        .collect();
    let bos = id(meta, "tokenizer.ggml.bos_token_id");
    let eos = id(meta, "tokenizer.ggml.eos_token_id");
    let add_bos = matches!(
        meta.get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    let name = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned());
    let post = match (add_bos, bos, name(bos)) {
        (true, Some(b), Some(bt)) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bt, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bt.clone(): {"id": bt, "ids": [b], "tokens": [bt]}}}),
        _ => serde_json::Value::Null,
    };
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    let inner: Tokenizer = doc
        .to_string()
        .parse()
        .map_err(|e| TokenizerError::Build(format!("cannot build tokenizer from GGUF: {e}")))?;
    let tok = TextTokenizer::new(
        inner,
        name(bos),
        name(eos),
        &eos.into_iter().collect::<Vec<_>>(),
    );
    Ok((
        tok,
        meta_str(meta, "tokenizer.chat_template").map(str::to_string),
    ))
}
