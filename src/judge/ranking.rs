//! Every candidate of a finished bracket in order: the winner, then by the round each
//! one lost in (later is better), then by its score in that match.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tournament::Bracket;

/// Where one candidate finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    /// Index into the context's candidates.
    pub index: usize,
    /// The round (0-based) the candidate lost in; none for the winner.
    pub exit_round: Option<usize>,
    /// Its debiased score in the last match it played; none if it never played (a
    /// single candidate).
    pub score: Option<f64>,
}

impl Bracket {
    /// The placements of `n` candidates, best first; ties in index order.
    pub fn ranking(&self, n: usize, winner: usize) -> Vec<Placement> {
        let mut out: Vec<Placement> = (0..n)
            .map(|index| Placement {
                index,
                exit_round: None,
                score: None,
            })
            .collect();
        for (r, round) in self.rounds.iter().enumerate() {
            for m in &round.matches {
                let loser = if m.winner == m.a { m.b } else { m.a };
                let score = |i: usize| {
                    if i == m.a {
                        m.verdict.score_a
                    } else {
                        m.verdict.score_b
                    }
                };
                out[loser].exit_round = Some(r);
                out[loser].score = Some(score(loser));
                out[m.winner].score = Some(score(m.winner));
            }
        }
        let key = |p: &Placement| (p.index != winner, std::cmp::Reverse(p.exit_round));
        out.sort_by(|a, b| {
            key(a)
                .cmp(&key(b))
                .then(b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0)))
                .then(a.index.cmp(&b.index))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tournament::{Match, Round};
    use crate::verdict::{Side, Verdict};

    fn m(a: usize, b: usize, a_wins: bool, sa: f64, sb: f64) -> Match {
        Match {
            a,
            b,
            winner: if a_wins { a } else { b },
            verdict: Verdict {
                winner: if a_wins { Side::A } else { Side::B },
                win_rate_a: if a_wins { 1.0 } else { 0.0 },
                score_a: sa,
                score_b: sb,
                principles: vec![],
                consistent: true,
            },
        }
    }

    #[test]
    fn winner_first_then_by_exit_round_then_score() {
        // Round 0: 0 beats 1 (0.7/0.3), 2 beats 3 (0.6/0.4), 4 has a bye;
        // round 1: 0 beats 4 (0.8/0.2), 2 has a bye; round 2: 2 beats 0 (0.55/0.45).
        let b = Bracket {
            rounds: vec![
                Round {
                    bye: Some(4),
                    matches: vec![m(0, 1, true, 0.7, 0.3), m(2, 3, true, 0.6, 0.4)],
                },
                Round {
                    bye: Some(2),
                    matches: vec![m(0, 4, true, 0.8, 0.2)],
                },
                Round {
                    bye: None,
                    matches: vec![m(2, 0, true, 0.55, 0.45)],
                },
            ],
        };
        let r = b.ranking(5, 2);
        let order: Vec<usize> = r.iter().map(|p| p.index).collect();
        assert_eq!(order, vec![2, 0, 4, 3, 1]);
        assert_eq!(r[0].exit_round, None);
        assert_eq!(r[1].exit_round, Some(2));
        assert_eq!(
            r[3],
            Placement {
                index: 3,
                exit_round: Some(0),
                score: Some(0.4)
            }
        );
    }
}
