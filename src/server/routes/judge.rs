//! `POST /judge` and `POST /tournament`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::ApiJson;
use crate::judge::Pair;
use crate::judge::TournamentResult;
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::schemas::RoundEvent;
use crate::server::schemas::{
    JudgeRequest, JudgeResponse, TournamentRequest, TournamentResponse, Winner,
};
use crate::server::sse::{from_channel, json_event};
use crate::server::state::AppState;
use crate::service::{AdmittedTournament, BestOfN, JudgeService, Prompt, RoundDone};
use crate::tokenizer::ChatMessage;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

/// Judge one pair or a list of pairs.
#[utoipa::path(
    post, path = "/judge", request_body = JudgeRequest,
    responses(
        (status = 200, description = "A verdict, or a list for `pairs`", body = JudgeResponse),
        (status = 413, description = "Too many prompts or a prompt over the limit", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity; retry after `Retry-After` seconds", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn judge(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<JudgeRequest>,
) -> Result<Json<JudgeResponse>, ApiError> {
    let service = st.service()?.select(req.adapter.as_deref())?;
    let (pairs, single) = match (req.pairs, req.context, req.response_a, req.response_b) {
        (Some(p), None, None, None) => (p, false),
        (None, Some(context), Some(response_a), Some(response_b)) => (
            vec![Pair {
                context,
                response_a,
                response_b,
            }],
            true,
        ),
        (Some(_), ..) => {
            return Err(ApiError::validation(
                "give either `pairs` or `context`/`response_a`/`response_b`, not both",
            ))
        }
        (None, c, a, b) => {
            let missing: Vec<&str> = [
                ("context", c.is_none()),
                ("response_a", a.is_none()),
                ("response_b", b.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, m)| m.then_some(n))
            .collect();
            return Err(ApiError::validation(format!(
                "missing field(s): {} (or give `pairs`)",
                missing.join(", ")
            )));
        }
    };
    let mut verdicts = service.judge(pairs, req.principles.as_deref()).await?;
    Ok(Json(if single {
        JudgeResponse::One(verdicts.remove(0))
    } else {
        JudgeResponse::Many(verdicts)
    }))
}

/// Knockout tournament over given candidates, or best-of-n self-rejection.
#[utoipa::path(
    post, path = "/tournament", request_body = TournamentRequest,
    responses(
        (status = 200, description = "One winner per context; with `stream`, `text/event-stream` events `round` (`RoundEvent`), then `result` (this body) or `error`", body = TournamentResponse),
        (status = 413, description = "Too many prompts or a prompt over the limit", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn tournament(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TournamentRequest>,
) -> Result<Response, ApiError> {
    let service = st.service()?.select(req.adapter.as_deref())?;
    let principles = req.principles.as_deref();
    if req.query.is_some() || req.messages.is_some() {
        if req.stream {
            return Err(ApiError::validation(
                "`stream` is for given candidates (`contexts`/`responses`)",
            ));
        }
        if req.contexts.is_some() || req.responses.is_some() {
            return Err(ApiError::validation(
                "give either `contexts`/`responses` or `query`/`messages`, not both",
            ));
        }
        let n = req
            .n
            .ok_or_else(|| ApiError::validation("best-of-n needs `n`"))?;
        let messages = match (&req.query, &req.messages) {
            (Some(q), None) => vec![ChatMessage::new("user", q.clone())],
            (None, Some(m)) => m.clone(),
            _ => return Err(ApiError::validation("give `query` or `messages`, not both")),
        };
        let best = service
            .best_of_n(BestOfN {
                prompt: Prompt::Chat(messages),
                context: req.context.clone(),
                n,
                keep: 1,
                sampling: req.sampling(),
                seed: req.seed,
                principles: req.principles.clone(),
            })
            .await?;
        let r = best
            .tournaments
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("best-of-n returned no winner"))?;
        let text = best.candidates[r.winner_index].text.clone();
        let winner = winner_of(&req, r, text, n);
        return Ok(Json(TournamentResponse {
            winners: vec![winner],
            candidates: Some(best.candidates),
        })
        .into_response());
    }
    let best_of_n_only = [
        ("n", req.n.is_some()),
        ("context", req.context.is_some()),
        ("max_new_tokens", req.max_new_tokens.is_some()),
        ("temperature", req.temperature.is_some()),
        ("top_p", req.top_p.is_some()),
        ("top_k", req.top_k.is_some()),
        ("stop", req.stop.is_some()),
    ];
    if let Some((field, _)) = best_of_n_only.iter().find(|(_, given)| *given) {
        return Err(ApiError::validation(format!(
            "`{field}` belongs to the best-of-n form (`query`/`messages` with `n`)"
        )));
    }
    let (Some(contexts), Some(responses)) = (&req.contexts, &req.responses) else {
        return Err(ApiError::validation(
            "give `contexts` and `responses` (or `query`/`messages` with `n`)",
        ));
    };
    if req.stream {
        let admitted = service.admit_tournament(contexts, responses, principles)?;
        let (contexts, responses) = (contexts.clone(), responses.clone());
        return Ok(streamed(service, req, admitted, contexts, responses));
    }
    let results = service
        .tournament(contexts, responses, req.seed, principles)
        .await?;
    Ok(Json(given_response(&req, results, responses)).into_response())
}

/// One context's winner with what the request asked to see of its bracket.
fn winner_of(req: &TournamentRequest, r: TournamentResult, text: String, n: usize) -> Winner {
    Winner {
        text,
        index: r.winner_index,
        ranking: req
            .return_ranking
            .then(|| r.bracket.ranking(n, r.winner_index)),
        bracket: req.return_bracket.then_some(r.bracket),
    }
}

fn given_response(
    req: &TournamentRequest,
    results: Vec<TournamentResult>,
    responses: &[Vec<String>],
) -> TournamentResponse {
    let winners = results
        .into_iter()
        .zip(responses)
        .map(|(r, resp)| {
            let text = resp[r.winner_index].clone();
            winner_of(req, r, text, resp.len())
        })
        .collect();
    TournamentResponse {
        winners,
        candidates: None,
    }
}

/// The given-candidates tournament as server-sent events: `round` after each round,
/// then `result` or `error`. A client that leaves stops the rounds not yet played.
fn streamed(
    service: JudgeService,
    req: TournamentRequest,
    admitted: AdmittedTournament,
    contexts: Vec<String>,
    responses: Vec<Vec<String>>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<RoundDone>();
        let run = admitted.run(&service, &contexts, &responses, req.seed, Some(&ptx));
        tokio::pin!(run);
        let round_event = |r: RoundDone| {
            json_event(
                Some("round"),
                &RoundEvent {
                    round: r.round,
                    rounds: r.rounds,
                },
            )
        };
        let outcome = loop {
            tokio::select! {
                Some(r) = prx.recv() => {
                    if tx.send(round_event(r)).await.is_err() {
                        return; // the client left: dropping `run` stops the rounds
                    }
                }
                out = &mut run => break out,
            }
        };
        while let Ok(r) = prx.try_recv() {
            if tx.send(round_event(r)).await.is_err() {
                return;
            }
        }
        let last = match outcome {
            Ok(results) => json_event(Some("result"), &given_response(&req, results, &responses)),
            Err(e) => json_event(Some("error"), &ApiError::from(e).body()),
        };
        let _ = tx.send(last).await;
    });
    from_channel(rx).into_response()
}
