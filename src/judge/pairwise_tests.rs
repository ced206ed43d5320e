//! Tests of [`super::pairwise::Judge`]'s prompt layout and verdict assembly, with the
//! tiny byte-level tokenizer and a scorer that answers from the prompt text.

use std::path::Path;

use super::error::JudgeError;
use super::pair::Pair;
use super::pairwise::{Judge, Scorer};
use super::prompt::PromptBuilder;
use super::template::{JudgeTemplate, Principle};
use super::verdict::{OrderProbs, Side};
use self_judge_tokenizer::{ChatTemplate, TextTokenizer};

fn tokenizer() -> TextTokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-chat");
    TextTokenizer::from_hf_dir(&dir, &[]).unwrap().0
}

fn judge() -> Judge {
    let tok = tokenizer();
    let chat =
        ChatTemplate::new("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
            .unwrap();
    let principle = |name: &str| Principle {
        name: name.into(),
        system: format!("judge {name}"),
        user: "{context}|{response_a}|{response_b}".into(),
        assistant: "Pick".into(),
    };
    Judge {
        template: JudgeTemplate::new(
            vec![principle("p1"), principle("p2"), principle("p3")],
            None,
        )
        .unwrap(),
        prompts: PromptBuilder::new(chat, tok, 256).unwrap(),
        token_ids: (256, 257),
    }
}

fn pair(i: usize) -> Pair {
    Pair {
        context: format!("c{i}"),
        response_a: format!("a{i}"),
        response_b: format!("b{i}"),
    }
}

/// Prefers whichever response of the prompt holds `good` (its text is decoded back).
struct Prefers<'a> {
    tok: &'a TextTokenizer,
    good: &'a str,
    extra: usize,
}

impl Scorer for Prefers<'_> {
    fn score(&self, prompts: &[Vec<u32>]) -> Result<Vec<OrderProbs>, JudgeError> {
        let tok = self.tok;
        let mut out: Vec<OrderProbs> = prompts
            .iter()
            .map(|p| {
                let text = tok.decode(p, false).unwrap();
                let shown: Vec<&str> = text.rsplit("[user]").next().unwrap().split('|').collect();
                let first = shown[1].contains(self.good);
                let p_a = if first { 0.9 } else { 0.1 };
                OrderProbs {
                    p_a,
                    p_b: 1.0 - p_a,
                }
            })
            .collect();
        out.extend(std::iter::repeat_n(
            OrderProbs { p_a: 0.5, p_b: 0.5 },
            self.extra,
        ));
        Ok(out)
    }
}

#[test]
fn each_pair_takes_both_orders_of_every_principle() {
    let j = judge();
    assert_eq!(j.prompts_per_pair(), 6);
    let tok = &tokenizer();
    let texts: Vec<String> = j
        .pair_prompts(&pair(0))
        .unwrap()
        .iter()
        .map(|p| tok.decode(p, false).unwrap())
        .collect();
    assert_eq!(texts.len(), 6);
    for (t, (name, order)) in texts.iter().zip([
        ("p1", "a0|b0"),
        ("p1", "b0|a0"),
        ("p2", "a0|b0"),
        ("p2", "b0|a0"),
        ("p3", "a0|b0"),
        ("p3", "b0|a0"),
    ]) {
        assert!(
            t.contains(&format!("judge {name}")) && t.contains(&format!("c0|{order}")),
            "{t}"
        );
    }
    let all = j.prompts_for(&[pair(0), pair(1)]).unwrap();
    assert_eq!(all.len(), 12);
    assert_eq!(all[..6], j.pair_prompts(&pair(0)).unwrap()[..]);
    assert_eq!(all[6..], j.pair_prompts(&pair(1)).unwrap()[..]);
}

#[test]
fn verdicts_come_back_pair_by_pair_and_counts_are_checked() {
    let (j, tok) = (judge(), tokenizer());
    let pairs = [pair(0), pair(1), pair(2)];
    // b0 is the better answer of pair 0; pairs 1 and 2 do not hold it, so both of
    // their orders favour whichever is shown first (position bias: inconsistent).
    let s = Prefers {
        tok: &tok,
        good: "b0",
        extra: 0,
    };
    let v = j.judge(&pairs, &s).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].winner, Side::B);
    assert!(v[0].consistent && v[0].principles.len() == 3);
    assert!(!v[1].consistent && !v[2].consistent);
    // Every `a` answer is better: A wins each pair, consistently.
    let s = Prefers {
        tok: &tok,
        good: "a",
        extra: 0,
    };
    let v = j.judge(&pairs, &s).unwrap();
    assert!(v.iter().all(|x| x.winner == Side::A && x.consistent));
    assert_eq!(
        j.verdicts(&s.score(&j.prompts_for(&pairs).unwrap()).unwrap())
            .unwrap(),
        v
    );
    // A scorer that answers for more prompts than it was given is an error.
    let s = Prefers {
        tok: &tok,
        good: "a",
        extra: 1,
    };
    let e = j.judge(&pairs, &s).unwrap_err().to_string();
    assert!(e.contains("19 scores for 18 prompts"), "{e}");
    let probs = vec![OrderProbs { p_a: 0.5, p_b: 0.5 }; 7];
    assert!(j.verdicts(&probs).is_err(), "7 scores are not pairs of 6");
    assert_eq!(j.verdicts(&probs[..6]).unwrap().len(), 1);
    assert!(j.verdicts(&[]).unwrap().is_empty());
}
