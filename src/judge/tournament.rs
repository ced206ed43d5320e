//! Knockout tournament over candidates (SPEC §3): best-of-N without a reward model.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::verdict::{Side, Verdict};
use super::{JudgeError, Pair};

/// One judged pair of a round; indices point into the context's input list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Match {
    /// Candidate in position `response_a`.
    pub a: usize,
    /// Candidate in position `response_b`.
    pub b: usize,
    pub winner: usize,
    pub verdict: Verdict,
}

/// One round for one context.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Round {
    /// The candidate that advanced without a match (odd count), if any.
    pub bye: Option<usize>,
    pub matches: Vec<Match>,
}

/// Every round of one context's tournament.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Bracket {
    pub rounds: Vec<Round>,
}

/// A context's winner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TournamentResult {
    pub winner_index: usize,
    pub bracket: Bracket,
}

/// A tournament in progress over several contexts. Each call to
/// [`Tournament::next_round`] yields every pair of every context for one round; the
/// verdicts go back through [`Tournament::record`]. Synchronous and asynchronous callers
/// drive it the same way.
pub struct Tournament<'a> {
    contexts: &'a [String],
    responses: &'a [Vec<String>],
    rng: StdRng,
    alive: Vec<Vec<usize>>,
    brackets: Vec<Bracket>,
    /// (context, a, b) of the round handed out and not yet recorded.
    pending: Vec<(usize, usize, usize)>,
    carry: Vec<Vec<usize>>,
}

impl<'a> Tournament<'a> {
    /// Validates the inputs. With `seed`, shuffles are reproducible.
    pub fn new(
        contexts: &'a [String],
        responses: &'a [Vec<String>],
        seed: Option<u64>,
    ) -> Result<Self, JudgeError> {
        if contexts.len() != responses.len() {
            return Err(JudgeError::Input(format!(
                "{} contexts but {} response lists",
                contexts.len(),
                responses.len()
            )));
        }
        if let Some(i) = responses.iter().position(Vec::is_empty) {
            return Err(JudgeError::Input(format!(
                "context {i} has an empty responses list"
            )));
        }
        Ok(Self {
            contexts,
            responses,
            rng: match seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            },
            alive: responses.iter().map(|r| (0..r.len()).collect()).collect(),
            brackets: vec![Bracket::default(); contexts.len()],
            pending: Vec::new(),
            carry: Vec::new(),
        })
    }

    /// The brackets so far, one per context (the last round of each is the one being
    /// played, or the one just recorded).
    pub fn brackets(&self) -> &[Bracket] {
        &self.brackets
    }

    /// Number of matches the whole tournament will play (N - 1 per context).
    pub fn total_matches(&self) -> usize {
        self.responses.iter().map(|r| r.len() - 1).sum()
    }

    /// Shuffles and pairs the next round; `None` once every context has one candidate.
    pub fn next_round(&mut self) -> Option<Vec<Pair>> {
        assert!(
            self.pending.is_empty(),
            "the previous round was not recorded"
        );
        if self.alive.iter().all(|l| l.len() <= 1) {
            return None;
        }
        self.carry = Vec::with_capacity(self.alive.len());
        for (ci, list) in self.alive.iter_mut().enumerate() {
            if list.len() <= 1 {
                self.carry.push(list.clone());
                continue;
            }
            list.shuffle(&mut self.rng);
            let mut round = Round::default();
            let mut rest: &[usize] = list;
            let mut carry = Vec::new();
            if rest.len() % 2 == 1 {
                round.bye = Some(rest[0]);
                carry.push(rest[0]);
                rest = &rest[1..];
            }
            for p in rest.chunks(2) {
                self.pending.push((ci, p[0], p[1]));
            }
            self.brackets[ci].rounds.push(round);
            self.carry.push(carry);
        }
        Some(
            self.pending
                .iter()
                .map(|&(ci, a, b)| Pair {
                    context: self.contexts[ci].clone(),
                    response_a: self.responses[ci][a].clone(),
                    response_b: self.responses[ci][b].clone(),
                })
                .collect(),
        )
    }

    /// Records the verdicts of the round returned by the last `next_round`.
    pub fn record(&mut self, verdicts: Vec<Verdict>) -> Result<(), JudgeError> {
        if verdicts.len() != self.pending.len() {
            return Err(JudgeError::Internal(format!(
                "{} verdicts for {} pairs",
                verdicts.len(),
                self.pending.len()
            )));
        }
        let mut next = std::mem::take(&mut self.carry);
        for ((ci, a, b), verdict) in self.pending.drain(..).zip(verdicts) {
            let winner = match verdict.winner {
                Side::A => a,
                Side::B => b,
            };
            next[ci].push(winner);
            let round = self.brackets[ci]
                .rounds
                .last_mut()
                .expect("round pushed in next_round");
            round.matches.push(Match {
                a,
                b,
                winner,
                verdict,
            });
        }
        self.alive = next;
        Ok(())
    }

    /// The winners, once `next_round` has returned `None`.
    pub fn finish(self) -> Vec<TournamentResult> {
        self.alive
            .into_iter()
            .zip(self.brackets)
            .map(|(l, bracket)| TournamentResult {
                winner_index: l[0],
                bracket,
            })
            .collect()
    }
}

/// Runs the tournament for every context. `judge` receives all pairs of all contexts
/// of one round together and returns one verdict per pair. With `seed`, shuffles are
/// reproducible (same seed and inputs, same bracket).
pub fn run_tournament<F>(
    contexts: &[String],
    responses: &[Vec<String>],
    seed: Option<u64>,
    mut judge: F,
) -> Result<Vec<TournamentResult>, JudgeError>
where
    F: FnMut(&[Pair]) -> Result<Vec<Verdict>, JudgeError>,
{
    let mut t = Tournament::new(contexts, responses, seed)?;
    while let Some(pairs) = t.next_round() {
        let verdicts = judge(&pairs)?;
        t.record(verdicts)?;
    }
    Ok(t.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{OrderProbs, PrincipleVerdict};

    /// A judge that prefers the longer response (ties to b), counting calls.
    fn longer(
        calls: &mut Vec<usize>,
    ) -> impl FnMut(&[Pair]) -> Result<Vec<Verdict>, JudgeError> + '_ {
        move |pairs| {
            calls.push(pairs.len());
            Ok(pairs
                .iter()
                .map(|p| {
                    let (la, lb) = (p.response_a.len() as f64, p.response_b.len() as f64);
                    let pa = la / (la + lb);
                    let probs = OrderProbs {
                        p_a: pa,
                        p_b: 1.0 - pa,
                    };
                    let swapped = OrderProbs {
                        p_a: 1.0 - pa,
                        p_b: pa,
                    };
                    Verdict::aggregate(vec![PrincipleVerdict::new("len", probs, swapped)])
                })
                .collect())
        }
    }

    fn strings(n: usize) -> Vec<String> {
        (1..=n).map(|i| "x".repeat(i)).collect()
    }

    #[test]
    fn total_matches_and_brackets_follow_the_rounds() {
        let ctx: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let resp = vec![strings(5), strings(2), strings(1)];
        let mut t = Tournament::new(&ctx, &resp, Some(9)).unwrap();
        assert_eq!(t.total_matches(), 4 + 1);
        let mut calls = vec![];
        let mut judge = longer(&mut calls);
        let mut played = 0;
        while let Some(pairs) = t.next_round() {
            played += pairs.len();
            t.record(judge(&pairs).unwrap()).unwrap();
            assert_eq!(t.brackets().len(), 3);
        }
        assert_eq!(played, 5, "one match per eliminated candidate");
        let rounds: Vec<usize> = t.brackets().iter().map(|b| b.rounds.len()).collect();
        assert_eq!(rounds, [3, 1, 0]);
    }

    #[test]
    fn single_candidate_needs_no_judgment() {
        let mut calls = vec![];
        let r = run_tournament(
            &["c".into()],
            &[vec!["only".into()]],
            Some(1),
            longer(&mut calls),
        )
        .unwrap();
        assert_eq!(r[0].winner_index, 0);
        assert!(r[0].bracket.rounds.is_empty());
        assert!(calls.is_empty());
    }

    #[test]
    fn odd_counts_byes_and_mixed_sizes_in_one_call_per_round() {
        let mut calls = vec![];
        let ctx: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let resp = vec![strings(5), strings(2), strings(1)];
        let r = run_tournament(&ctx, &resp, Some(3), longer(&mut calls)).unwrap();
        // The longest candidate always wins under this judge.
        assert_eq!(
            r.iter().map(|x| x.winner_index).collect::<Vec<_>>(),
            vec![4, 1, 0]
        );
        // Round 1: 2 pairs (5 candidates, one bye) + 1 pair; round 2: 3 alive -> 1 pair; round 3: 1 pair.
        assert_eq!(calls, vec![3, 1, 1]);
        let rounds = &r[0].bracket.rounds;
        assert_eq!(rounds.len(), 3);
        assert!(rounds[0].bye.is_some() && rounds[0].matches.len() == 2);
        // Every alive candidate appears exactly once per round.
        let mut alive: Vec<usize> = (0..5).collect();
        for round in rounds {
            let mut seen: Vec<usize> = round
                .bye
                .into_iter()
                .chain(round.matches.iter().flat_map(|m| [m.a, m.b]))
                .collect();
            seen.sort();
            assert_eq!(seen, alive);
            alive = round
                .bye
                .into_iter()
                .chain(round.matches.iter().map(|m| m.winner))
                .collect();
            alive.sort();
        }
        assert_eq!(alive, vec![4]);
    }

    #[test]
    fn seeded_replay_gives_the_same_bracket() {
        let resp = vec![strings(8)];
        let run = |seed| {
            let mut calls = vec![];
            run_tournament(&["c".into()], &resp, Some(seed), longer(&mut calls)).unwrap()
        };
        assert_eq!(run(9), run(9));
        let differs = (10..20).any(|s| run(s)[0].bracket != run(9)[0].bracket);
        assert!(differs, "different seeds should give different brackets");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut calls = vec![];
        let e = run_tournament(&["c".into()], &[vec![]], None, longer(&mut calls)).unwrap_err();
        assert!(e.to_string().contains("empty responses list"));
        let e = run_tournament(
            &["c".into(), "d".into()],
            &[vec!["x".into()]],
            None,
            longer(&mut calls),
        )
        .unwrap_err();
        assert!(e.to_string().contains("2 contexts but 1 response lists"));
    }
}
