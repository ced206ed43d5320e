//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::{chat_logprobs, finish_reason, messages, now, response_id, sampling};
use super::error::{GenerationErrors, OpenAiError};
use super::routes::{complete, data, ready, service_for, sse, start_stream, Ask, OpenAiJson};
use super::schemas::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, Usage,
};
use crate::server::state::AppState;
use crate::service::{Prompt, StreamEvent};

/// Chat completions (OpenAI's API), with self-judged `best_of`.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or `text/event-stream` chunks (`ChatCompletionChunk`) with `stream`", body = ChatCompletion),
        GenerationErrors,
    ),
    security(("bearer" = []))
)]
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    let ready = ready(&st)?;
    let service = service_for(ready, &req.model)?;
    let top = match (req.logprobs, req.top_logprobs) {
        (false, Some(_)) => {
            return Err(OpenAiError::invalid(
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        (true, k) => Some(k.unwrap_or(0)),
        (false, None) => None,
    };
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let ask = Ask {
        prompt: Prompt::Chat(messages(req.messages)?),
        context: None,
        n: req.common.n,
        sampling: sampling(&req.common, max_tokens, top)?,
    };
    let (id, created, model) = (response_id("chatcmpl"), now(), req.model.clone());
    let tok = service.model().tokenizer.clone();
    if req.common.stream {
        let include_usage = req.common.include_usage();
        let stream = start_stream(&service, &req.common, ask).await?;
        let n = req.common.n.unwrap_or(1);
        let chunk =
            move |choices: Vec<ChatChunkChoice>, usage: Option<Usage>| ChatCompletionChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices,
                usage,
            };
        let format = move |e: Option<StreamEvent>, u: Option<Usage>| -> Option<Event> {
            let choices = match e {
                // The opening chunk: each choice's role.
                None if u.is_none() => (0..n)
                    .map(|index| ChatChunkChoice {
                        index,
                        delta: ChatDelta {
                            role: Some("assistant".into()),
                            content: Some(String::new()),
                        },
                        finish_reason: None,
                        logprobs: None,
                    })
                    .collect(),
                None => vec![],
                Some(StreamEvent::Delta {
                    index,
                    text,
                    logprobs,
                }) => vec![ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: None,
                        content: Some(text),
                    },
                    finish_reason: None,
                    logprobs: top.map(|_| chat_logprobs(&tok, &logprobs)),
                }],
                Some(StreamEvent::Finished {
                    index,
                    finish_reason: r,
                    ..
                }) => vec![ChatChunkChoice {
                    index,
                    delta: ChatDelta::default(),
                    finish_reason: Some(finish_reason(r)),
                    logprobs: None,
                }],
            };
            Some(data(&chunk(choices, u)))
        };
        return Ok(sse(stream, include_usage, format).into_response());
    }
    let out = complete(&service, &req.common, ask).await?;
    let choices = out
        .choices
        .into_iter()
        .enumerate()
        .map(|(index, (g, t))| ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant".into(),
                content: g.text,
            },
            finish_reason: finish_reason(g.finish_reason),
            logprobs: top.map(|_| chat_logprobs(&tok, &t.logprobs)),
        })
        .collect();
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created,
        model,
        choices,
        usage: out.usage,
        self_judge: out.self_judge,
    })
    .into_response())
}
