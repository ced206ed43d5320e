//! `POST /v1/completions` (OpenAI's legacy text completions).

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::{completion_logprobs, finish_reason, now, response_id, sampling};
use super::error::{GenerationErrors, OpenAiError};
use super::routes::{complete, data, ready, service_for, sse, start_stream, Ask, OpenAiJson};
use super::schemas::{Completion, CompletionChoice, CompletionRequest, PromptInput, Usage};
use crate::server::state::AppState;
use crate::service::{Prompt, StreamEvent};
use crate::tokenizer::TextTokenizer;

/// Text completions (OpenAI's legacy API), with self-judged `best_of`.
#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion, or `text/event-stream` chunks (`Completion`) with `stream`", body = Completion),
        GenerationErrors,
    ),
    security(("bearer" = []))
)]
pub async fn completions(
    State(st): State<Arc<AppState>>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let ready = ready(&st)?;
    let service = service_for(ready, &req.model)?;
    if req.echo {
        return Err(OpenAiError::invalid("`echo` is not supported"));
    }
    let prompt = match req.prompt {
        PromptInput::One(p) => p,
        PromptInput::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptInput::Many(v) => {
            return Err(OpenAiError::invalid(format!(
                "one prompt per request is supported (got {})",
                v.len()
            )))
        }
    };
    let ask = Ask {
        context: Some(prompt.clone()),
        prompt: Prompt::Text(prompt),
        n: req.common.n,
        sampling: sampling(
            &req.common,
            Some(req.max_tokens.unwrap_or(16)),
            req.logprobs,
        )?,
    };
    let (id, created, model) = (response_id("cmpl"), now(), req.model.clone());
    let tok: TextTokenizer = service.model().tokenizer.clone();
    let top = req.logprobs;
    let body = move |choices: Vec<CompletionChoice>, usage: Option<Usage>, sj| Completion {
        id: id.clone(),
        object: "text_completion".into(),
        created,
        model: model.clone(),
        choices,
        usage,
        self_judge: sj,
    };
    if req.common.stream {
        let include_usage = req.common.include_usage();
        let stream = start_stream(&service, &req.common, ask).await?;
        let mut offsets: Vec<usize> = Vec::new();
        let format = move |e: Option<StreamEvent>, u: Option<Usage>| -> Option<Event> {
            let choices = match e {
                None if u.is_none() => return None,
                None => vec![],
                Some(StreamEvent::Delta {
                    index,
                    text,
                    logprobs,
                }) => {
                    if offsets.len() <= index {
                        offsets.resize(index + 1, 0);
                    }
                    let lp = top.map(|_| completion_logprobs(&tok, &logprobs, offsets[index]));
                    offsets[index] += text.len();
                    vec![CompletionChoice {
                        index,
                        text,
                        finish_reason: None,
                        logprobs: lp,
                    }]
                }
                Some(StreamEvent::Finished {
                    index,
                    finish_reason: r,
                    ..
                }) => vec![CompletionChoice {
                    index,
                    text: String::new(),
                    finish_reason: Some(finish_reason(r)),
                    logprobs: None,
                }],
            };
            Some(data(&body(choices, u, None)))
        };
        return Ok(sse(stream, include_usage, format).into_response());
    }
    let out = complete(&service, &req.common, ask).await?;
    let choices = out
        .choices
        .into_iter()
        .enumerate()
        .map(|(index, (g, t))| CompletionChoice {
            index,
            finish_reason: Some(finish_reason(g.finish_reason)),
            logprobs: top.map(|_| completion_logprobs(&tok, &t.logprobs, 0)),
            text: g.text,
        })
        .collect();
    Ok(Json(body(choices, Some(out.usage), out.self_judge)).into_response())
}
