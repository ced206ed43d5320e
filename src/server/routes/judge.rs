//! `POST /judge` and `POST /tournament`.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::generate::{sample, SampleSpec};
use super::ApiJson;
use crate::judge::{Judge, Pair, Tournament, Verdict};
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::schemas::{
    JudgeRequest, JudgeResponse, TournamentRequest, TournamentResponse, Winner,
};
use crate::server::state::{AppState, Ready};
use crate::tokenizer::ChatMessage;

/// The judge for a request: all principles, or the requested subset.
fn judge_for<'r>(
    ready: &'r Ready,
    principles: &Option<Vec<String>>,
) -> Result<Cow<'r, Judge>, ApiError> {
    Ok(match principles {
        Some(names) => Cow::Owned(ready.judge.with_principles(names)?),
        None => Cow::Borrowed(&ready.judge),
    })
}

/// Judges pairs through the engine queue (all prompts enter it together).
async fn judge_pairs(
    ready: &Ready,
    judge: &Judge,
    pairs: &[Pair],
) -> Result<Vec<Verdict>, ApiError> {
    let prompts = judge.prompts_for(pairs)?;
    let probs = ready.engine.judge(prompts).await?;
    Ok(judge.verdicts(&probs)?)
}

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
    let ready = st.ready()?;
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
    if pairs.is_empty() {
        return Err(ApiError::validation("`pairs` is empty"));
    }
    let judge = judge_for(ready, &req.principles)?;
    let _permit = st.admit(pairs.len() * judge.prompts_per_pair())?;
    let mut verdicts = judge_pairs(ready, &judge, &pairs).await?;
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
    let ready = st.ready()?;
    let judge = judge_for(ready, &req.principles)?;
    let ppp = judge.prompts_per_pair();
    let self_rejection = req.query.is_some() || req.messages.is_some();
    let (contexts, responses, candidates, _permit) = if self_rejection {
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
        // The HH style the judge is trained on, for a query as for a conversation.
        let context = req
            .context
            .clone()
            .unwrap_or_else(|| crate::judge::hh_context(&messages));
        let spec = SampleSpec::new(ready, None, Some(messages), Some(n), req.sampling())?;
        let permit = st.admit(n + n.saturating_sub(1) * ppp)?;
        let (generations, _) = sample(ready, spec).await?;
        let texts = vec![generations
            .iter()
            .map(|g| g.text.clone())
            .collect::<Vec<_>>()];
        (vec![context], texts, Some(generations), permit)
    } else {
        if req.n.is_some() || req.context.is_some() {
            return Err(ApiError::validation(
                "`n` and `context` belong to the best-of-n form (`query`/`messages`)",
            ));
        }
        let (Some(contexts), Some(responses)) = (req.contexts, req.responses) else {
            return Err(ApiError::validation(
                "give `contexts` and `responses` (or `query`/`messages` with `n`)",
            ));
        };
        if contexts.len() != responses.len() {
            return Err(ApiError::validation(format!(
                "`contexts` has {} items but `responses` has {}",
                contexts.len(),
                responses.len()
            )));
        }
        if contexts.is_empty() {
            return Err(ApiError::validation("`contexts` is empty"));
        }
        if let Some(i) = responses.iter().position(Vec::is_empty) {
            return Err(ApiError::validation(format!("`responses[{i}]` is empty")));
        }
        let matches: usize = responses.iter().map(|r| r.len() - 1).sum();
        let permit = st.admit(matches * ppp)?;
        (contexts, responses, None, permit)
    };
    let mut t = Tournament::new(&contexts, &responses, req.seed)?;
    while let Some(pairs) = t.next_round() {
        let verdicts = judge_pairs(ready, &judge, &pairs).await?;
        t.record(verdicts)?;
    }
    let winners = t
        .finish()
        .into_iter()
        .zip(&responses)
        .map(|(r, resp)| Winner {
            text: resp[r.winner_index].clone(),
            index: r.winner_index,
            bracket: req.return_bracket.then_some(r.bracket),
        })
        .collect();
    Ok(Json(TournamentResponse {
        winners,
        candidates,
    }))
}
