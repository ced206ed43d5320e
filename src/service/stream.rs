//! Streaming generation: the engine's tokens as text deltas. A delta is sent only
//! once it is final: text that could still turn into a stop string, or an incomplete
//! UTF-8 character, waits for the next tokens.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::error::{Result, ServiceError};
use super::facade::{Admitted, JudgeService};
use super::generate::{Prompt, SamplingRequest};
use self_judge_engine::{FinishReason, GenEvent, GenerationRequest, TokenLogprob};
use self_judge_model::LoadedModel;

/// One event of a streamed generation.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// New text of sample `index`, with the log-probabilities of the tokens it came
    /// from (when asked for).
    Delta {
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Sample `index` has ended (its last delta came before).
    Finished {
        index: usize,
        finish_reason: FinishReason,
        tokens: usize,
    },
}

/// Per-sample progress: the tokens so far and the text already sent.
#[derive(Default)]
struct Progress {
    ids: Vec<u32>,
    sent: String,
    /// Log-probabilities of tokens whose text has not been sent yet.
    pending: Vec<TokenLogprob>,
}

/// A generation in progress; [`GenerationStream::next`] yields its events in order.
/// Dropping it cancels the generation and frees its admission.
pub struct GenerationStream {
    rx: UnboundedReceiver<GenEvent>,
    model: Arc<LoadedModel>,
    /// Bytes of text held back: one less than the longest stop string.
    holdback: usize,
    samples: Vec<Progress>,
    queued: std::collections::VecDeque<StreamEvent>,
    done: bool,
    /// Tokens of the prompt, as the model saw it.
    pub prompt_tokens: usize,
    _admitted: Admitted,
}

/// The longest prefix of `text` that is safe to send: no trailing replacement
/// character (an incomplete UTF-8 sequence) and `holdback` bytes kept back.
fn safe_prefix(text: &str, holdback: usize) -> &str {
    let text = text.trim_end_matches('\u{FFFD}');
    let mut end = text.len().saturating_sub(holdback);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl GenerationStream {
    /// The next event, or `None` after the last; an engine failure is an error.
    pub async fn next(&mut self) -> Option<Result<StreamEvent>> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Some(GenEvent::Token(t)) => {
                    if let Err(e) = self.token(t.index, t.token, t.logprob) {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Some(GenEvent::Done(Ok(samples))) => {
                    self.done = true;
                    for g in samples {
                        let p = self.progress(g.index);
                        // The final text is authoritative (a stop string is cut off).
                        let rest = g.text.strip_prefix(p.sent.as_str()).unwrap_or("");
                        let logprobs = std::mem::take(&mut p.pending);
                        if !rest.is_empty() || !logprobs.is_empty() {
                            self.queued.push_back(StreamEvent::Delta {
                                index: g.index,
                                text: rest.to_string(),
                                logprobs,
                            });
                        }
                        self.queued.push_back(StreamEvent::Finished {
                            index: g.index,
                            finish_reason: g.finish_reason,
                            tokens: g.token_ids.len(),
                        });
                    }
                }
                Some(GenEvent::Done(Err(e))) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                None => {
                    self.done = true;
                    return Some(Err(ServiceError::Internal(
                        "the engine ended a generation without a result".into(),
                    )));
                }
            }
        }
    }

    fn progress(&mut self, index: usize) -> &mut Progress {
        if self.samples.len() <= index {
            self.samples.resize_with(index + 1, Progress::default);
        }
        &mut self.samples[index]
    }

    fn token(&mut self, index: usize, id: u32, lp: Option<TokenLogprob>) -> Result<()> {
        let model = self.model.clone();
        let holdback = self.holdback;
        let p = self.progress(index);
        p.ids.push(id);
        p.pending.extend(lp);
        let text = model.tokenizer.decode(&p.ids, true)?;
        let safe = safe_prefix(&text, holdback);
        // A decode that rewrote text already sent is left to the final text.
        if safe.len() > p.sent.len() && safe.starts_with(p.sent.as_str()) {
            let delta = safe[p.sent.len()..].to_string();
            p.sent = safe.to_string();
            let logprobs = std::mem::take(&mut p.pending);
            self.queued.push_back(StreamEvent::Delta {
                index,
                text: delta,
                logprobs,
            });
        }
        Ok(())
    }
}

impl JudgeService {
    /// `n` samples of a prompt as a stream of text deltas; admitted (or refused) whole
    /// before anything is generated, like [`JudgeService::generate`].
    pub async fn generate_stream(
        &self,
        prompt: Prompt,
        n: Option<usize>,
        sampling: SamplingRequest,
    ) -> Result<GenerationStream> {
        let spec = self.sample_spec(prompt, n, sampling).await?;
        let admitted =
            self.admit_generation(spec.n, spec.prompt_ids.len(), spec.params.max_new_tokens, 0)?;
        let holdback = spec
            .params
            .stop
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let prompt_tokens = spec.prompt_ids.len();
        let rx = self.engine.generate_stream(GenerationRequest {
            request: 0,
            prompt_ids: spec.prompt_ids,
            params: spec.params,
            n: spec.n,
        })?;
        Ok(GenerationStream {
            rx,
            model: self.model.clone(),
            holdback,
            samples: Vec::new(),
            queued: Default::default(),
            done: false,
            prompt_tokens,
            _admitted: admitted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::safe_prefix;

    #[test]
    fn holds_back_what_may_still_change() {
        assert_eq!(safe_prefix("Hello wor", 0), "Hello wor");
        assert_eq!(safe_prefix("Hello wor", 3), "Hello ");
        assert_eq!(
            safe_prefix("caf\u{e9}", 1),
            "caf",
            "never inside a character"
        );
        assert_eq!(
            safe_prefix("ab\u{FFFD}", 0),
            "ab",
            "an incomplete character waits"
        );
        assert_eq!(safe_prefix("ab", 5), "");
    }
}
