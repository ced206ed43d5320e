//! `GET /v1/models` and what the generation routes ([`super::chat`],
//! [`super::completions`]) share: the JSON extractor, the model check, generation or
//! self-judged best-of-n, and server-sent event streams.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::Json;
use futures::Stream;
use serde::Serialize;

use super::error::{OpenAiError, OpenAiErrorResponse};
use super::schemas::{CommonParams, ModelCard, ModelList, SelfJudgeInfo, Usage};
use crate::server::json::ApiJson;
use crate::server::sse::{from_channel, json_event};
use crate::server::state::{AppState, Ready};
use crate::service::{
    BestOfN, Generation, GenerationStream, JudgeService, Prompt, SampleTokens, SamplingRequest,
    StreamEvent,
};

/// `Json<T>` whose rejections are OpenAI errors.
pub struct OpenAiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for OpenAiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(v) = ApiJson::<T>::from_request(req, state)
            .await
            .map_err(OpenAiError)?;
        Ok(OpenAiJson(v))
    }
}

pub(super) fn ready(st: &AppState) -> Result<&Ready, OpenAiError> {
    Ok(st
        .ready
        .get()
        .ok_or_else(crate::server::error::ApiError::not_ready)?)
}

/// The service `model` names: the base under its served name, or an adapter under its
/// own (`--adapter NAME=DIR`); 404 naming what is served otherwise.
pub(crate) fn service_for(ready: &Ready, model: &str) -> Result<JudgeService, OpenAiError> {
    if model == ready.model_id {
        return Ok(ready.service.clone());
    }
    let names = ready.service.adapter_names();
    if names.iter().any(|n| n == model) {
        return Ok(ready.service.adapted(model)?);
    }
    let served: Vec<String> = std::iter::once(&ready.model_id)
        .chain(&names)
        .map(|n| format!("`{n}`"))
        .collect();
    Err(OpenAiError::unknown_model(model, &served.join(", ")))
}

/// The served models: the base, then each adapter (its `parent` is the base).
#[utoipa::path(get, path = "/v1/models", responses(
    (status = 200, description = "The served models", body = ModelList),
    (status = 401, description = "Missing or wrong API key (only when the server has one)", body = OpenAiErrorResponse),
    (status = 503, description = "Loading", body = OpenAiErrorResponse),
), security((), ("bearer" = [])))]
pub async fn models(State(st): State<Arc<AppState>>) -> Result<Json<ModelList>, OpenAiError> {
    let ready = ready(&st)?;
    let card = |id: &str, parent: Option<&str>| ModelCard {
        id: id.to_string(),
        object: "model".into(),
        created: ready.created,
        owned_by: "self-judge".into(),
        parent: parent.map(str::to_string),
    };
    let mut data = vec![card(&ready.model_id, None)];
    for name in ready.service.adapter_names() {
        data.push(card(&name, Some(&ready.model_id)));
    }
    Ok(Json(ModelList {
        object: "list".into(),
        data,
    }))
}

/// A request's samples: generated directly, or the best of several by self-judgment.
pub(super) struct Outcome {
    /// (sample, its tokens) per returned choice, best first under `best_of`.
    pub choices: Vec<(Generation, SampleTokens)>,
    pub usage: Usage,
    pub self_judge: Option<SelfJudgeInfo>,
}

/// What both generation routes ask of the service.
pub(super) struct Ask {
    pub prompt: Prompt,
    /// The judge's context under `best_of` (default: the service's).
    pub context: Option<String>,
    pub n: Option<usize>,
    pub sampling: SamplingRequest,
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

pub(super) async fn complete(
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
pub(super) async fn start_stream(
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

pub(super) fn data<T: Serialize>(v: &T) -> Event {
    json_event(None, v)
}

/// Server-sent events from a generation: one `data:` event per chunk `format` makes,
/// the usage chunk when asked for, an error event if the engine fails, then
/// `data: [DONE]`. Dropping the response (a client that left) cancels the generation.
pub(super) fn sse<F>(
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
    from_channel(rx)
}
