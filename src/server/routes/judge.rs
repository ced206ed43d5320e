//! `POST /judge` and `POST /tournament`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::ApiJson;
use crate::judge::Pair;
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::schemas::{
    JudgeRequest, JudgeResponse, TournamentRequest, TournamentResponse, Winner,
};
use crate::server::state::AppState;
use crate::service::{BestOfN, Prompt};
use crate::tokenizer::ChatMessage;

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
    let service = st.service()?;
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
        (status = 200, description = "One winner per context", body = TournamentResponse),
        (status = 413, description = "Too many prompts or a prompt over the limit", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn tournament(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TournamentRequest>,
) -> Result<Json<TournamentResponse>, ApiError> {
    let service = st.service()?;
    let principles = req.principles.as_deref();
    if req.query.is_some() || req.messages.is_some() {
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
        let winner = Winner {
            text: best.candidates[r.winner_index].text.clone(),
            index: r.winner_index,
            bracket: req.return_bracket.then_some(r.bracket),
        };
        return Ok(Json(TournamentResponse {
            winners: vec![winner],
            candidates: Some(best.candidates),
        }));
    }
    if req.n.is_some() || req.context.is_some() {
        return Err(ApiError::validation(
            "`n` and `context` belong to the best-of-n form (`query`/`messages`)",
        ));
    }
    let (Some(contexts), Some(responses)) = (&req.contexts, &req.responses) else {
        return Err(ApiError::validation(
            "give `contexts` and `responses` (or `query`/`messages` with `n`)",
        ));
    };
    let results = service
        .tournament(contexts, responses, req.seed, principles)
        .await?;
    let winners = results
        .into_iter()
        .zip(responses)
        .map(|(r, resp)| Winner {
            text: resp[r.winner_index].clone(),
            index: r.winner_index,
            bracket: req.return_bracket.then_some(r.bracket),
        })
        .collect();
    Ok(Json(TournamentResponse {
        winners,
        candidates: None,
    }))
}
