//! Judging with the real SmolLM2 model against transformers' reference
//! (`scripts/parity/judge_reference.py`): prompt text, token ids, p_a/p_b, verdicts;
//! token-id checks at start-up.

mod common;

use common::{fixture, judge_config, smollm2};
use self_judge::engine::DirectScorer;
use self_judge::judge::{Judge, JudgeOptions, Order, Pair, Side};
use serde_json::Value;

/// Our demo config carrying the same judge template as the reference's seed config.
fn demo_for(seed_config: &str) -> &'static str {
    match seed_config {
        "configs/hh_self_judge.yaml" => "smollm2_hh_judge.yaml",
        "configs/uf_self_judge_pr.yaml" => "smollm2_uf_pr_judge.yaml",
        other => panic!("unexpected reference config {other}"),
    }
}

#[test]
fn prompts_and_probabilities_match_transformers() {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("smollm2/judge_reference.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for case in r["cases"].as_array().unwrap() {
        let judge = Judge::new(
            smollm2(),
            &judge_config(demo_for(case["config"].as_str().unwrap())),
            &JudgeOptions::default(),
        )
        .unwrap();
        assert_eq!(
            judge.token_ids,
            (
                case["token_id_a"].as_u64().unwrap() as u32,
                case["token_id_b"].as_u64().unwrap() as u32
            )
        );
        let pair = Pair {
            context: case["context"].as_str().unwrap().into(),
            response_a: case["response_a"].as_str().unwrap().into(),
            response_b: case["response_b"].as_str().unwrap().into(),
        };
        let scorer = DirectScorer {
            decoder: &smollm2().decoder,
            token_ids: judge.token_ids,
            max_batch_tokens: 4096,
        };
        let verdict = judge
            .judge(std::slice::from_ref(&pair), &scorer)
            .unwrap()
            .remove(0);
        let refs = case["principles"].as_array().unwrap();
        assert_eq!(verdict.principles.len(), refs.len());
        assert_eq!(judge.template.principles.len(), refs.len());
        for ((pr, cp), got) in refs
            .iter()
            .zip(&judge.template.principles)
            .zip(&verdict.principles)
        {
            assert_eq!(got.name, pr["name"].as_str().unwrap());
            for (order, key, probs) in [(Order::Ab, "ab", got.ab), (Order::Ba, "ba", got.ba)] {
                let want = &pr[key];
                let text = judge
                    .prompts
                    .render(cp, &pair.context, &pair.response_a, &pair.response_b, order)
                    .unwrap();
                assert_eq!(text, want["prompt"].as_str().unwrap(), "{} {key}", got.name);
                let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
                assert_eq!(judge.prompts.tokenize(&text).unwrap(), ids);
                let (pa, pb) = (want["p_a"].as_f64().unwrap(), want["p_b"].as_f64().unwrap());
                assert!(
                    (probs.p_a - pa).abs() < 1e-3 && (probs.p_b - pb).abs() < 1e-3,
                    "{} {key}: {probs:?} vs {pa} {pb}",
                    got.name
                );
                checked += 1;
            }
        }
        // The verdict follows SPEC §2 from those probabilities.
        let want_a: f64 = refs
            .iter()
            .map(|p| (p["ab"]["p_a"].as_f64().unwrap() + p["ba"]["p_b"].as_f64().unwrap()) / 2.0)
            .sum::<f64>()
            / refs.len() as f64;
        assert!((verdict.score_a - want_a).abs() < 1e-3);
    }
    assert_eq!(checked, 2 * (3 + 4));
}

#[test]
fn packed_judging_equals_one_pair_at_a_time() {
    let judge = Judge::new(
        smollm2(),
        &judge_config("smollm2_uf_pr_judge.yaml"),
        &JudgeOptions::default(),
    )
    .unwrap();
    let pairs: Vec<Pair> = (0..3)
        .map(|i| Pair {
            context: format!("Question {i}: name a colour."),
            response_a: "Blue.".into(),
            response_b: format!("{i} is not a colour."),
        })
        .collect();
    let packed = DirectScorer {
        decoder: &smollm2().decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 1 << 20,
    };
    let tiny = DirectScorer {
        decoder: &smollm2().decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 1,
    };
    let a = judge.judge(&pairs, &packed).unwrap();
    let b = judge.judge(&pairs, &tiny).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.winner, y.winner);
        assert_eq!(x.principles.len(), y.principles.len());
        for (p, q) in x.principles.iter().zip(&y.principles) {
            assert!((p.score_a - q.score_a).abs() < 1e-5 && (p.score_b - q.score_b).abs() < 1e-5);
        }
    }
}

#[test]
fn seed_token_ids_are_refused_for_this_tokenizer_unless_forced() {
    let cfg = judge_config("hh_self_judge.yaml");
    let e = Judge::new(smollm2(), &cfg, &JudgeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("(319, 350)") && e.contains("(330, 389)"), "{e}");
    let forced = Judge::new(
        smollm2(),
        &cfg,
        &JudgeOptions {
            force_token_ids: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(forced.token_ids, (319, 350));
}

#[test]
fn unknown_principle_is_refused() {
    let e = Judge::new(
        smollm2(),
        &judge_config("smollm2_uf_pr_judge.yaml"),
        &JudgeOptions {
            principles: Some(vec!["honesty".into(), "wit".into()]),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown principle `wit`"), "{e}");
}

#[test]
fn identical_responses_tie_and_the_tie_goes_to_b() {
    let judge = Judge::new(
        smollm2(),
        &judge_config("smollm2_hh_judge.yaml"),
        &JudgeOptions::default(),
    )
    .unwrap();
    let scorer = DirectScorer {
        decoder: &smollm2().decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 8192,
    };
    let pair = Pair {
        context: "User: What is the capital of France?".into(),
        response_a: "Paris.".into(),
        response_b: "Paris.".into(),
    };
    let v = judge.judge(&[pair], &scorer).unwrap().remove(0);
    // Identical responses: both orders are the same prompt, so the scores tie exactly
    // and the tie goes to b.
    assert_eq!(v.score_a, v.score_b);
    assert_eq!(v.winner, Side::B);
}
