//! From per-prompt A/B probabilities to a [`Verdict`] (SPEC §2 step 5 and the
//! aggregation across principles).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which response of a pair wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
}

/// Next-token probabilities of ` A` and ` B` for one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderProbs {
    pub p_a: f64,
    pub p_b: f64,
}

/// One principle's debiased scores and the raw probabilities of both orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipleVerdict {
    pub name: String,
    /// `(ab.p_a + ba.p_b) / 2`.
    pub score_a: f64,
    /// `(ab.p_b + ba.p_a) / 2`.
    pub score_b: f64,
    /// Order (response_a, response_b).
    pub ab: OrderProbs,
    /// Order (response_b, response_a).
    pub ba: OrderProbs,
}

/// The judgment of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub winner: Side,
    /// Share of principles where `score_a > score_b`.
    pub win_rate_a: f64,
    /// Mean over principles.
    pub score_a: f64,
    /// Mean over principles.
    pub score_b: f64,
    pub principles: Vec<PrincipleVerdict>,
    /// The same response is preferred in both orders, for every principle.
    pub consistent: bool,
}

impl PrincipleVerdict {
    /// Combines the two orders of one principle.
    pub fn new(name: &str, ab: OrderProbs, ba: OrderProbs) -> Self {
        Self {
            name: name.to_string(),
            score_a: (ab.p_a + ba.p_b) / 2.0,
            score_b: (ab.p_b + ba.p_a) / 2.0,
            ab,
            ba,
        }
    }

    /// True when both orders prefer the same response.
    fn consistent(&self) -> bool {
        (self.ab.p_a > self.ab.p_b) == (self.ba.p_b > self.ba.p_a)
    }
}

impl Verdict {
    /// Aggregates principles: `a` wins when its win rate is above one half, `b` when
    /// below; at exactly one half `a` wins only with a strictly larger mean score, so an
    /// exact tie goes to `b`.
    pub fn aggregate(principles: Vec<PrincipleVerdict>) -> Self {
        let n = principles.len().max(1) as f64;
        let wins = principles.iter().filter(|p| p.score_a > p.score_b).count() as f64;
        let win_rate_a = wins / n;
        let score_a = principles.iter().map(|p| p.score_a).sum::<f64>() / n;
        let score_b = principles.iter().map(|p| p.score_b).sum::<f64>() / n;
        let winner = if win_rate_a > 0.5 {
            Side::A
        } else if win_rate_a < 0.5 {
            Side::B
        } else if score_a > score_b {
            Side::A
        } else {
            Side::B
        };
        let consistent = principles.iter().all(PrincipleVerdict::consistent);
        Self {
            winner,
            win_rate_a,
            score_a,
            score_b,
            principles,
            consistent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, ab: (f64, f64), ba: (f64, f64)) -> PrincipleVerdict {
        PrincipleVerdict::new(
            name,
            OrderProbs {
                p_a: ab.0,
                p_b: ab.1,
            },
            OrderProbs {
                p_a: ba.0,
                p_b: ba.1,
            },
        )
    }

    #[test]
    fn one_principle_scores_and_consistency() {
        let v = Verdict::aggregate(vec![pv("h", (0.8, 0.15), (0.29, 0.62))]);
        assert_eq!(v.winner, Side::A);
        assert!((v.score_a - 0.71).abs() < 1e-12 && (v.score_b - 0.22).abs() < 1e-12);
        assert_eq!(v.win_rate_a, 1.0);
        assert!(v.consistent);
        // Position bias: both orders say "A" -> inconsistent; debiased score decides.
        let v = Verdict::aggregate(vec![pv("h", (0.7, 0.2), (0.6, 0.3))]);
        assert!(!v.consistent);
        assert_eq!(v.winner, Side::A); // score_a = (0.7 + 0.3) / 2 = 0.5 > score_b = 0.4
    }

    #[test]
    fn a_tie_in_one_order_is_not_consistent() {
        // One order has no preference: the two orders do not agree on a response.
        for (ab, ba) in [((0.5, 0.5), (0.2, 0.7)), ((0.7, 0.2), (0.4, 0.4))] {
            let v = Verdict::aggregate(vec![pv("h", ab, ba)]);
            assert!(!v.consistent, "{ab:?} {ba:?}");
        }
    }

    #[test]
    fn exact_tie_goes_to_b() {
        let v = Verdict::aggregate(vec![pv("h", (0.5, 0.5), (0.5, 0.5))]);
        assert_eq!(v.win_rate_a, 0.0);
        assert_eq!(v.winner, Side::B);
    }

    #[test]
    fn two_principles_split_uses_mean() {
        // a wins principle 1 by a lot, loses principle 2 by a little -> rate 0.5, mean favours a.
        let v = Verdict::aggregate(vec![
            pv("x", (0.9, 0.1), (0.1, 0.9)),
            pv("y", (0.45, 0.55), (0.55, 0.45)),
        ]);
        assert_eq!(v.win_rate_a, 0.5);
        assert!(v.score_a > v.score_b);
        assert_eq!(v.winner, Side::A);
        // Mirror: rate 0.5 with equal means -> b.
        let v = Verdict::aggregate(vec![
            pv("x", (0.6, 0.4), (0.4, 0.6)),
            pv("y", (0.4, 0.6), (0.6, 0.4)),
        ]);
        assert_eq!(v.win_rate_a, 0.5);
        assert_eq!(v.score_a, v.score_b);
        assert_eq!(v.winner, Side::B);
    }

    #[test]
    fn four_principles_majority_and_ties_count_as_losses() {
        let win = pv("w", (0.6, 0.3), (0.3, 0.6));
        let lose = pv("l", (0.3, 0.6), (0.6, 0.3));
        let tie = pv("t", (0.5, 0.5), (0.5, 0.5));
        let v = Verdict::aggregate(vec![win.clone(), win.clone(), win.clone(), lose.clone()]);
        assert_eq!((v.win_rate_a, v.winner), (0.75, Side::A));
        let v = Verdict::aggregate(vec![win.clone(), tie.clone(), tie.clone(), lose.clone()]);
        assert_eq!((v.win_rate_a, v.winner), (0.25, Side::B));
        let v = Verdict::aggregate(vec![win.clone(), win, tie, lose]);
        assert_eq!(v.win_rate_a, 0.5);
        assert_eq!(v.winner, Side::A); // means: a 0.5 > b 0.425
    }
}
