//! From OpenAI requests to service calls, and from service results to OpenAI bodies.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::OpenAiError;
use super::schemas::{
    ChatLogprobs, CommonParams, CompletionLogprobs, MessageContent, OpenAiMessage, TokenLogprobOut,
    TopLogprob,
};
use crate::engine::{FinishReason, TokenLogprob};
use crate::service::SamplingRequest;
use crate::tokenizer::{ChatMessage, TextTokenizer};

/// Seconds since the epoch (`created`).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id unique within this process: `prefix-<start time>-<counter>`.
pub fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:06x}",
        now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// OpenAI's `finish_reason`: an end-of-sequence token and a stop string are both `stop`.
pub fn finish_reason(r: FinishReason) -> String {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
    .to_string()
}

/// The conversation as the chat template reads it: text parts joined, `developer` as
/// `system`; images and other parts are refused.
pub fn messages(msgs: Vec<OpenAiMessage>) -> Result<Vec<ChatMessage>, OpenAiError> {
    if msgs.is_empty() {
        return Err(OpenAiError::invalid("`messages` is empty"));
    }
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(OpenAiError::invalid(format!(
                        "`messages[{i}].role` {other:?} is not supported (system, developer, user, assistant)"
                    )))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(OpenAiError::invalid(format!(
                                    "`messages[{i}].content[{j}]`: only text parts are supported (got {kind:?})"
                                )))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// The sampling settings of a request; features this server does not implement are
/// refused rather than ignored.
pub fn sampling(
    c: &CommonParams,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
) -> Result<SamplingRequest, OpenAiError> {
    for (name, v) in [
        ("frequency_penalty", c.frequency_penalty),
        ("presence_penalty", c.presence_penalty),
    ] {
        if v.is_some_and(|x| x != 0.0) {
            return Err(OpenAiError::invalid(format!(
                "`{name}` is not supported (leave it out or 0)"
            )));
        }
    }
    if max_tokens == Some(0) {
        return Err(OpenAiError::invalid("`max_tokens` must be >= 1"));
    }
    Ok(SamplingRequest {
        max_new_tokens: max_tokens,
        temperature: c.temperature,
        top_p: c.top_p,
        top_k: None,
        seed: c.seed,
        stop: c.stop.clone().map(|s| s.into_vec()),
        logprobs,
    })
}

fn piece(tok: &TextTokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// A chat choice's log-probabilities.
pub fn chat_logprobs(tok: &TextTokenizer, lps: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|lp| {
                let token = piece(tok, lp.id);
                TokenLogprobOut {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: lp.logprob,
                    top_logprobs: lp
                        .top
                        .iter()
                        .map(|&(id, logprob)| {
                            let token = piece(tok, id);
                            TopLogprob {
                                bytes: token.as_bytes().to_vec(),
                                token,
                                logprob,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// A completion choice's log-probabilities (offsets count bytes from `offset`).
pub fn completion_logprobs(
    tok: &TextTokenizer,
    lps: &[TokenLogprob],
    offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs {
        tokens: Vec::new(),
        token_logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        text_offset: Vec::new(),
    };
    let mut at = offset;
    for lp in lps {
        let token = piece(tok, lp.id);
        out.text_offset.push(at);
        at += token.len();
        out.tokens.push(token);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs
            .push(lp.top.iter().map(|&(id, l)| (piece(tok, id), l)).collect());
    }
    out
}
