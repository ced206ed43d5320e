//! `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`: the service's
//! generation and best-of-n in OpenAI's shapes, streamed as server-sent events when
//! asked.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;

use super::convert::{
    chat_logprobs, completion_logprobs, finish_reason, messages, now, response_id, sampling,
};
use super::error::{OpenAiError, OpenAiErrorResponse};
use super::schemas::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, CommonParams, Completion, CompletionChoice,
    CompletionRequest, ModelCard, ModelList, PromptInput, SelfJudgeInfo, Usage,
};
use crate::server::state::{AppState, Ready};
use crate::service::{
    BestOfN, Generation, GenerationStream, JudgeService, Prompt, SampleTokens, SamplingRequest,
    StreamEvent,
};
use crate::tokenizer::TextTokenizer;

/// `Json<T>` whose rejections are OpenAI errors.
pub struct OpenAiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for OpenAiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state)
            .await
            .map_err(|e: JsonRejection| OpenAiError(e.into()))?;
        Ok(OpenAiJson(v))
    }
}

fn ready(st: &AppState) -> Result<&Ready, OpenAiError> {
    Ok(st
        .ready
        .get()
        .ok_or_else(crate::server::error::ApiError::not_ready)?)
}

fn check_model(ready: &Ready, model: &str) -> Result<(), OpenAiError> {
    if model == ready.model_id {
        Ok(())
    } else {
        Err(OpenAiError::unknown_model(model, &ready.model_id))
    }
}

/// The served model.
#[utoipa::path(get, path = "/v1/models", responses(
    (status = 200, description = "The served model", body = ModelList),
    (status = 503, description = "Loading", body = OpenAiErrorResponse),
), security(("bearer" = [])))]
pub async fn models(State(st): State<Arc<AppState>>) -> Result<Json<ModelList>, OpenAiError> {
    let ready = ready(&st)?;
    Ok(Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: ready.model_id.clone(),
            object: "model".into(),
            created: ready.created,
            owned_by: "self-judge".into(),
        }],
    }))
}

/// A request's samples: generated directly, or the best of several by self-judgment.
struct Outcome {
    /// (sample, its tokens) per returned choice, best first under `best_of`.
    choices: Vec<(Generation, SampleTokens)>,
    usage: Usage,
    self_judge: Option<SelfJudgeInfo>,
}

/// What both generation routes ask of the service.
struct Ask {
    prompt: Prompt,
    /// The judge's context under `best_of` (default: the service's).
    context: Option<String>,
    n: Option<usize>,
    sampling: SamplingRequest,
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

async fn complete(
    service: &JudgeService,
    common: &CommonParams,
    ask: Ask,
) -> Result<Outcome, OpenAiError> {
    let Some(best_of) = common.best_of else {
        let out = service.generate(ask.prompt, ask.n, ask.sampling).await?;
        let completion = out.generations.iter().map(|g| g.tokens).sum();
        return Ok(Outcome {
            usage: usage(out.prompt_tokens, completion),
            choices: out.generations.into_iter().zip(out.tokens).collect(),
            self_judge: None,
        });
    };
    let n = ask.n.unwrap_or(1);
    if best_of < n {
        return Err(OpenAiError::invalid(format!(
            "`best_of` ({best_of}) must be at least `n` ({n})"
        )));
    }
    let best = service
        .best_of_n(BestOfN {
            prompt: ask.prompt,
            context: ask.context,
            n: best_of,
            keep: n,
            seed: ask.sampling.seed,
            sampling: ask.sampling,
            principles: None,
        })
        .await?;
    let winners: Vec<usize> = best.tournaments.iter().map(|t| t.winner_index).collect();
    let completion = best.candidates.iter().map(|g| g.tokens).sum();
    Ok(Outcome {
        usage: usage(best.prompt_tokens, completion),
        choices: winners
            .iter()
            .map(|&i| (best.candidates[i].clone(), best.tokens[i].clone()))
            .collect(),
        self_judge: Some(SelfJudgeInfo {
            best_of,
            candidates: best.candidates.iter().map(|g| g.text.clone()).collect(),
            winners,
            brackets: best.tournaments.into_iter().map(|t| t.bracket).collect(),
        }),
    })
}

/// Starts a streamed generation (`best_of` cannot stream: the winner is known only at
/// the end).
async fn start_stream(
    service: &JudgeService,
    common: &CommonParams,
    ask: Ask,
) -> Result<GenerationStream, OpenAiError> {
    if common.best_of.is_some_and(|b| b > 1) {
        return Err(OpenAiError::invalid(
            "`best_of` cannot be combined with `stream`",
        ));
    }
    Ok(service
        .generate_stream(ask.prompt, ask.n, ask.sampling)
        .await?)
}

fn data<T: Serialize>(v: &T) -> Event {
    Event::default().data(serde_json::to_string(v).unwrap_or_default())
}

/// Server-sent events from a generation: one `data:` event per chunk `format` makes,
/// the usage chunk when asked for, an error event if the engine fails, then
/// `data: [DONE]`. Dropping the response (a client that left) cancels the generation.
fn sse<F>(
    mut stream: GenerationStream,
    include_usage: bool,
    mut format: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: FnMut(Option<StreamEvent>, Option<Usage>) -> Option<Event> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        if let Some(first) = format(None, None) {
            if tx.send(first).await.is_err() {
                return;
            }
        }
        let mut completion = 0;
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(e) => {
                    if let StreamEvent::Finished { tokens, .. } = &e {
                        completion += tokens;
                    }
                    format(Some(e), None)
                }
                Err(e) => Some(data(&OpenAiError::from(e).body())),
            };
            if let Some(ev) = event {
                if tx.send(ev).await.is_err() {
                    return; // the client is gone: dropping `stream` cancels the work
                }
            }
        }
        if include_usage {
            if let Some(ev) = format(None, Some(usage(stream.prompt_tokens, completion))) {
                let _ = tx.send(ev).await;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(e), rx))
    }))
}

/// Chat completions (OpenAI's API), with self-judged `best_of`.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or `text/event-stream` chunks (`ChatCompletionChunk`) with `stream`", body = ChatCompletion),
        (status = 400, description = "Invalid request", body = OpenAiErrorResponse),
        (status = 404, description = "Unknown model", body = OpenAiErrorResponse),
        (status = 413, description = "Prompt over the limit or more work than the server admits", body = OpenAiErrorResponse),
        (status = 415, description = "Not JSON", body = OpenAiErrorResponse),
        (status = 429, description = "At capacity", body = OpenAiErrorResponse),
        (status = 503, description = "Loading", body = OpenAiErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    let ready = ready(&st)?;
    check_model(ready, &req.model)?;
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
    let (id, created, model) = (response_id("chatcmpl"), now(), ready.model_id.clone());
    let tok = ready.service.model().tokenizer.clone();
    if req.common.stream {
        let include_usage = req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let stream = start_stream(&ready.service, &req.common, ask).await?;
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
    let out = complete(&ready.service, &req.common, ask).await?;
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

/// Text completions (OpenAI's legacy API), with self-judged `best_of`.
#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion, or `text/event-stream` chunks (`Completion`) with `stream`", body = Completion),
        (status = 400, description = "Invalid request", body = OpenAiErrorResponse),
        (status = 404, description = "Unknown model", body = OpenAiErrorResponse),
        (status = 413, description = "Prompt over the limit or more work than the server admits", body = OpenAiErrorResponse),
        (status = 415, description = "Not JSON", body = OpenAiErrorResponse),
        (status = 429, description = "At capacity", body = OpenAiErrorResponse),
        (status = 503, description = "Loading", body = OpenAiErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn completions(
    State(st): State<Arc<AppState>>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let ready = ready(&st)?;
    check_model(ready, &req.model)?;
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
    let (id, created, model) = (response_id("cmpl"), now(), ready.model_id.clone());
    let tok: TextTokenizer = ready.service.model().tokenizer.clone();
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
        let include_usage = req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let stream = start_stream(&ready.service, &req.common, ask).await?;
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
    let out = complete(&ready.service, &req.common, ask).await?;
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
