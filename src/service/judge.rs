//! Pairs, tournaments over given candidates, and best-of-n: the judge's work as a
//! transport asks for it, every check made once here.

use std::sync::Arc;

use super::error::{Result, ServiceError};
use super::facade::JudgeService;
use super::generate::{Generation, Prompt, SampleTokens, SamplingRequest};
use self_judge_judge::{hh_context, Judge, Pair, Round, Tournament, TournamentResult, Verdict};
use tokio::sync::mpsc::UnboundedSender;

/// One finished round of a streamed tournament.
#[derive(Debug, Clone)]
pub struct RoundDone {
    /// 0-based.
    pub round: usize,
    /// Per context, the round just played (none for a context already decided).
    pub rounds: Vec<Option<Round>>,
}

/// Best-of-n: generate `n` candidates for a prompt, then a tournament picks one.
#[derive(Debug, Clone)]
pub struct BestOfN {
    pub prompt: Prompt,
    /// The judge's context (default: a conversation in the HH `User:`/`Assistant:`
    /// style the judge is trained on; raw text as is).
    pub context: Option<String>,
    pub n: usize,
    /// How many winners to pick (1 by default): the first is the bracket's winner, each
    /// next one the winner of a new bracket over the candidates not yet picked.
    pub keep: usize,
    pub sampling: SamplingRequest,
    /// Seeds the sampling (through `sampling.seed` when unset there) and the bracket.
    pub seed: Option<u64>,
    pub principles: Option<Vec<String>>,
}

/// The outcome of [`JudgeService::best_of_n`].
#[derive(Debug, Clone)]
pub struct BestOfNResult {
    /// One tournament per winner picked, best first; every index (winner and bracket)
    /// points into `candidates`.
    pub tournaments: Vec<TournamentResult>,
    /// Every candidate, in generation order.
    pub candidates: Vec<Generation>,
    /// The candidates' tokens, in the same order.
    pub tokens: Vec<SampleTokens>,
    pub prompt_tokens: usize,
}

/// `r` with every candidate index `i` replaced by `map[i]`.
fn remap(mut r: TournamentResult, map: &[usize]) -> TournamentResult {
    r.winner_index = map[r.winner_index];
    for round in &mut r.bracket.rounds {
        round.bye = round.bye.map(|b| map[b]);
        for m in &mut round.matches {
            (m.a, m.b, m.winner) = (map[m.a], map[m.b], map[m.winner]);
        }
    }
    r
}

/// A tournament whose judge prompts are admitted ([`JudgeService::admit_tournament`]).
pub struct AdmittedTournament {
    judge: Arc<Judge>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AdmittedTournament {
    /// Plays every round (the same `contexts` and `responses` as admitted), telling
    /// `progress` about each finished round.
    pub async fn run(
        &self,
        service: &JudgeService,
        contexts: &[String],
        responses: &[Vec<String>],
        seed: Option<u64>,
        progress: Option<&UnboundedSender<RoundDone>>,
    ) -> Result<Vec<TournamentResult>> {
        service
            .run_tournament(&self.judge, contexts, responses, seed, progress)
            .await
    }
}

impl JudgeService {
    /// The judge for a request: all principles, or the named subset.
    fn judge_for(&self, principles: Option<&[String]>) -> Result<Arc<Judge>> {
        Ok(match principles {
            Some(names) => Arc::new(self.judge.with_principles(names)?),
            None => self.judge.clone(),
        })
    }

    /// Builds the pairs' prompts off the async runtime, scores them in one engine
    /// submission, and aggregates the verdicts.
    async fn score_pairs(&self, judge: &Arc<Judge>, pairs: Vec<Pair>) -> Result<Vec<Verdict>> {
        let builder = judge.clone();
        let prompts = tokio::task::spawn_blocking(move || builder.prompts_for(&pairs)).await??;
        let n = prompts.len();
        let probs = self.engine.judge(prompts).await?;
        if probs.len() != n {
            return Err(ServiceError::Internal(format!(
                "{} scores for {n} prompts",
                probs.len()
            )));
        }
        Ok(judge.verdicts(&probs)?)
    }

    /// Runs the rounds of a tournament to the end, telling `progress` (if any) about
    /// each finished round.
    async fn run_tournament(
        &self,
        judge: &Arc<Judge>,
        contexts: &[String],
        responses: &[Vec<String>],
        seed: Option<u64>,
        progress: Option<&UnboundedSender<RoundDone>>,
    ) -> Result<Vec<TournamentResult>> {
        let mut t = Tournament::new(contexts, responses, seed)?;
        let mut round = 0;
        while let Some(pairs) = t.next_round() {
            let before: Vec<usize> = t.brackets().iter().map(|b| b.rounds.len()).collect();
            let verdicts = self.score_pairs(judge, pairs).await?;
            t.record(verdicts)?;
            if let Some(tx) = progress {
                let rounds = t
                    .brackets()
                    .iter()
                    .zip(&before)
                    .map(|(b, &n)| (n > round).then(|| b.rounds[n - 1].clone()))
                    .collect();
                // A listener that left does not stop the tournament it was admitted for.
                let _ = tx.send(RoundDone { round, rounds });
            }
            round += 1;
        }
        Ok(t.finish())
    }

    /// One verdict per pair, in order; refused whole when its prompts cannot be admitted.
    pub async fn judge(
        &self,
        pairs: Vec<Pair>,
        principles: Option<&[String]>,
    ) -> Result<Vec<Verdict>> {
        if pairs.is_empty() {
            return Err(ServiceError::Invalid("`pairs` is empty".into()));
        }
        let judge = self.judge_for(principles)?;
        let _permit = self.admit(pairs.len() * judge.prompts_per_pair())?;
        self.score_pairs(&judge, pairs).await
    }

    /// A knockout tournament per context over its given candidates (SPEC §3).
    pub async fn tournament(
        &self,
        contexts: &[String],
        responses: &[Vec<String>],
        seed: Option<u64>,
        principles: Option<&[String]>,
    ) -> Result<Vec<TournamentResult>> {
        self.admit_tournament(contexts, responses, principles)?
            .run(self, contexts, responses, seed, None)
            .await
    }

    /// Checks a tournament over given candidates and admits all of its judge prompts,
    /// before any is computed (a transport can still answer with an error status).
    pub fn admit_tournament(
        &self,
        contexts: &[String],
        responses: &[Vec<String>],
        principles: Option<&[String]>,
    ) -> Result<AdmittedTournament> {
        if contexts.len() != responses.len() {
            return Err(ServiceError::Invalid(format!(
                "`contexts` has {} items but `responses` has {}",
                contexts.len(),
                responses.len()
            )));
        }
        if contexts.is_empty() {
            return Err(ServiceError::Invalid("`contexts` is empty".into()));
        }
        if let Some(i) = responses.iter().position(Vec::is_empty) {
            return Err(ServiceError::Invalid(format!("`responses[{i}]` is empty")));
        }
        let judge = self.judge_for(principles)?;
        let matches: usize = responses.iter().map(|r| r.len() - 1).sum();
        let permit = self.admit(matches * judge.prompts_per_pair())?;
        Ok(AdmittedTournament {
            judge,
            _permit: permit,
        })
    }

    /// Generates `n` candidates and returns the self-judged tournament winner(s). The
    /// sequences and every judge prompt of the brackets are admitted together, so a
    /// request never stops half-way for capacity.
    pub async fn best_of_n(&self, req: BestOfN) -> Result<BestOfNResult> {
        if req.keep == 0 || req.keep > req.n {
            return Err(ServiceError::Invalid(format!(
                "the number of winners must be between 1 and the {} candidates (got {})",
                req.n, req.keep
            )));
        }
        let judge = self.judge_for(req.principles.as_deref())?;
        let mut sampling = req.sampling;
        sampling.seed = sampling.seed.or(req.seed);
        let context = match (req.context, &req.prompt) {
            (Some(c), _) => c,
            (None, Prompt::Chat(m)) => hh_context(m),
            (None, Prompt::Text(t)) => t.clone(),
        };
        let spec = self.sample_spec(req.prompt, Some(req.n), sampling).await?;
        let n = spec.n;
        let matches: usize = (0..req.keep).map(|j| n - j - 1).sum();
        let _admitted = self.admit_generation(
            n,
            spec.prompt_ids.len(),
            spec.params.max_new_tokens,
            matches * judge.prompts_per_pair(),
        )?;
        let out = self.run_generation(spec).await?;
        let contexts = [context];
        let mut left: Vec<usize> = (0..n).collect();
        let mut tournaments = Vec::with_capacity(req.keep);
        while tournaments.len() < req.keep {
            let texts = vec![left
                .iter()
                .map(|&i| out.generations[i].text.clone())
                .collect()];
            let r = self
                .run_tournament(&judge, &contexts, &texts, req.seed, None)
                .await?
                .pop()
                .ok_or_else(|| ServiceError::Internal("a tournament without a result".into()))?;
            let r = remap(r, &left);
            left.retain(|&i| i != r.winner_index);
            tournaments.push(r);
        }
        Ok(BestOfNResult {
            tournaments,
            candidates: out.generations,
            tokens: out.tokens,
            prompt_tokens: out.prompt_tokens,
        })
    }
}
