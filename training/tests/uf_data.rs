//! UltraFeedback JSFT rows (seed notes d.5–d.8) on the tiny byte-level tokenizer (no
//! BOS, `<|im_end|>` as EOS, `skip_first_token` false) with the seed's UF templates:
//! ranking, the pair rules, the exact texts and where the loss starts.

mod common;

use std::collections::BTreeSet;

use self_judge_judge::{JudgeConfig, JudgeTemplate};
use self_judge_tokenizer::{ChatTemplate, TextTokenizer};
use serde_json::{json, Value};
use training::config::TrainConfig;
use training::data::jsft::{BuildStats, JsftBuilder};
use training::data::uf::{format_rationale, rank, row_rng, UfRow};
use training::loss::{Example, IGNORE};

const EOS: &str = "<|im_end|>";

/// Tokenizer, chat template, judge template and rationale template of a seed config.
struct Setup {
    tok: TextTokenizer,
    chat: ChatTemplate,
    judge: JudgeTemplate,
    rationale: Option<String>,
}

fn setup(config: &str) -> Setup {
    let root = common::root();
    let (tok, _) = TextTokenizer::from_hf_dir(&root.join("tests/fixtures/tiny-chat"), &[]).unwrap();
    let yaml = std::fs::read_to_string(root.join("configs").join(config)).unwrap();
    let cfg = JudgeConfig::from_yaml(&yaml).unwrap();
    Setup {
        tok,
        chat: ChatTemplate::new(cfg.chat_template.as_deref().unwrap()).unwrap(),
        judge: cfg.template,
        rationale: TrainConfig::from_yaml(&yaml)
            .unwrap()
            .rationale_template()
            .unwrap(),
    }
}

impl Setup {
    fn builder(&self) -> JsftBuilder<'_> {
        JsftBuilder::new(
            &self.tok,
            &self.chat,
            &self.judge,
            4096,
            "\n<|user|>\n",
            "\n<|assistant|>\n",
            false,
        )
        .unwrap()
        .with_rationale(self.rationale.clone())
    }

    fn text(&self, e: &Example) -> String {
        self.tok.decode(&e.input_ids, false).unwrap()
    }

    /// The learned tokens, decoded; they must be one contiguous suffix.
    fn learned(&self, e: &Example) -> String {
        let first = e.labels.iter().position(|&l| l != IGNORE).unwrap();
        assert!(e.labels[first..].iter().all(|&l| l != IGNORE));
        self.tok.decode(&e.input_ids[first..], false).unwrap()
    }
}

/// A completion: (principle, rating, rationale, rationale for rating).
fn completion(response: &str, system: &str, anns: &[(&str, &str, &str, Option<&str>)]) -> Value {
    let mut a = serde_json::Map::new();
    for &(p, rating, rationale, rfr) in anns {
        let mut v = json!({"Rating": rating, "Rationale": rationale});
        if let Some(r) = rfr {
            v["Rationale For Rating"] = json!(r);
        }
        a.insert(p.to_string(), v);
    }
    json!({"response": response, "custom_system_prompt": system, "annotations": a})
}

/// A completion rated only under `overall`.
fn rated(response: &str, rating: &str) -> Value {
    completion(response, "SYS", &[("overall", rating, "ok", None)])
}

#[test]
fn ranking_is_mean_then_length_then_input_order_with_unrated_last() {
    // The worked example of d.8.
    let means = [Some(4.5), Some(3.0), Some(4.5), Some(2.0)];
    assert_eq!(rank(&means, &[100, 50, 200, 10]), [2, 0, 1, 3]);
    // Full ties keep input order; completions without a numeric rating come last.
    assert_eq!(
        rank(&[None, Some(1.0), Some(1.0), None], &[9, 3, 3, 10]),
        [1, 2, 3, 0]
    );
    // Through parsing: "N/A" ratings are left out of the mean; lengths are code points
    // ("éé" is 2 characters, 4 bytes, so it loses to the 3-character "abc").
    let row = UfRow::from_row(&json!({"instruction": "I", "completions": [
        completion("éé", "S", &[("a", "4", "r", None), ("b", "N/A", "r", None)]),
        completion("abc", "S", &[("a", "3", "r", None), ("b", "5", "r", None)]),
        completion("long but unrated", "S", &[("a", "N/A", "r", None)]),
    ]}))
    .unwrap();
    assert_eq!(row.mean_rating(0), Some(4.0));
    assert_eq!(row.mean_rating(2), None);
    assert_eq!(row.rank(), [1, 0, 2]);
}

#[test]
fn principle_pairs_follow_the_rank_na_and_text_rules() {
    // Overall means [4.5, 3, 4.5, 2] and lengths [100, 50, 200, 10]: rank [2, 0, 1, 3].
    // helpfulness [4, 2, 3, 5]: target 2 gives (0,2), (2,1), (3,2); honesty
    // [5, 5, 5, N/A] has no strict comparison at all.
    let c = |len: usize, h: &str, hon: &str, o: &str| {
        completion(
            &"x".repeat(len),
            "S",
            &[
                ("helpfulness", h, "fine", None),
                ("honesty", hon, "fine", None),
                ("overall", o, "fine", None),
            ],
        )
    };
    let row = UfRow::from_row(&json!({"instruction": "I", "completions": [
        c(100, "4", "5", "4.5"), c(50, "2", "5", "2"), c(200, "3", "5", "5.5"), c(10, "5", "N/A", "-1"),
    ]}))
    .unwrap();
    assert_eq!(row.rank(), [2, 0, 1, 3]);
    let seen: BTreeSet<(usize, usize)> = (0..200)
        .map(|s| {
            row.principle_pair("helpfulness", &mut row_rng(s, 0))
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(seen, BTreeSet::from([(0, 2), (2, 1), (3, 2)]));
    assert_eq!(
        row.principle_pair("honesty", &mut row_rng(0, 0)).unwrap(),
        None
    );
    assert_eq!(
        row.principle_pair("absent", &mut row_rng(0, 0)).unwrap(),
        None
    );

    // The Text rule: completion 2 (ranked first) has a rationale mentioning "Text", so
    // it has no usable comparison and the walk moves on to completion 0 (rank[1]):
    // (0,2) is excluded too and 3 is N/A, leaving (0,1).
    let t = |len: usize, h: &str, o: &str, why: &str| {
        completion(
            &"x".repeat(len),
            "S",
            &[("helpfulness", h, why, None), ("overall", o, "ok", None)],
        )
    };
    let row = UfRow::from_row(&json!({"instruction": "I", "completions": [
        t(3, "4", "3", "fine"), t(2, "2", "3", "fine"), t(4, "3", "5", "unlike Text 1"), t(1, "N/A", "3", "fine"),
    ]}))
    .unwrap();
    assert_eq!(row.rank(), [2, 0, 3, 1]);
    for s in 0..20 {
        assert_eq!(
            row.principle_pair("helpfulness", &mut row_rng(s, 0))
                .unwrap(),
            Some((0, 1))
        );
    }
    // The rule is case-sensitive: "text" does not exclude.
    let row = UfRow::from_row(&json!({"instruction": "I", "completions": [
        t(3, "4", "3", "the text is fine"), t(2, "2", "3", "fine"),
    ]}))
    .unwrap();
    assert_eq!(
        row.principle_pair("helpfulness", &mut row_rng(0, 0))
            .unwrap(),
        Some((0, 1))
    );
}

#[test]
fn rationale_rows_are_exact_and_learn_the_decision_and_rationales_only() {
    let s = setup("uf_jsft_pr.yaml");
    let b = s.builder();
    // helpfulness: 5 vs 2, both rationales with "Rationale For Rating" -> one pair;
    // honesty: N/A on one side; instruction_following: a tie; truthfulness: the
    // better rationale mentions "Text" -> no rows for those three.
    let row = json!({"instruction": "Say hi.", "completions": [
        completion("Hi there!", "Be kind.", &[
            ("helpfulness", "5", "Good.", Some("Clear.")),
            ("honesty", "N/A", "Unsure.", None),
            ("instruction_following", "4", "Follows.", None),
            ("truthfulness", "3", "Unlike Text 2.", Some("Fine.")),
        ]),
        completion("Bye.", "Be terse.", &[
            ("helpfulness", "2", "Bad.", Some("Vague.")),
            ("honesty", "3", "Honest.", None),
            ("instruction_following", "4", "Follows.", None),
            ("truthfulness", "1", "Wrong.", Some("False.")),
        ]),
    ]});
    let mut stats = BuildStats::default();
    let ex = b.uf(&[row], 42, &mut stats).unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(
        (
            stats.rows,
            stats.sft,
            stats.judgments,
            stats.no_pair,
            stats.bad_rows
        ),
        (1, 1, 2, 3, 0)
    );
    // SFT: the best response under its own system prompt, no BOS, response + EOS learned.
    assert_eq!(
        s.text(&ex[0]),
        format!("<|system|>\nBe kind.\n<|user|>\nSay hi.\n<|assistant|>\nHi there!{EOS}")
    );
    assert_eq!(s.learned(&ex[0]), format!("Hi there!{EOS}"));

    let p = &s.judge.principles[0].principle;
    assert_eq!(p.name, "helpfulness");
    let prompt = |a: &str, b: &str| {
        format!(
            "<|system|>\n{}\n<|user|>\nWhich is the better response for an assistant when following the principle of 'helpfulness' for a given instruction?\n\nInstruction:\n-----\nSay hi.\n-----\n\nResponse A:\n-----\n{a}\n-----\n\nResponse B:\n-----\n{b}\n-----\n\nPlease choose either A or B and evaluate each response according to the principle of 'helpfulness'.\n<|assistant|>\nSure! Here is the decision of better response and evaluations of each response, guided by the principle of 'helpfulness'.\n\nDecision: Response",
            p.system
        )
    };
    let target_a =
        " A\n\nEvaluation of Response A: Good. Clear.\nEvaluation of Response B: Bad. Vague.";
    let target_b =
        " B\n\nEvaluation of Response A: Bad. Vague.\nEvaluation of Response B: Good. Clear.";
    // Order a (better at A) then b; the EOS is cut, never learned.
    assert_eq!(s.text(&ex[1]), prompt("Hi there!", "Bye.") + target_a);
    assert_eq!(s.text(&ex[2]), prompt("Bye.", "Hi there!") + target_b);
    assert_eq!(s.learned(&ex[1]), target_a);
    assert_eq!(s.learned(&ex[2]), target_b);
    for e in &ex[1..] {
        assert!(!s.text(e).contains(EOS));
    }
}

#[test]
fn base_rows_pair_the_best_with_a_strictly_worse_response() {
    let s = setup("uf_jsft.yaml");
    let b = s.builder();
    // Ratings 4, 4, 1: the tie is broken by length (completion 1 is best); completion 0
    // is not strictly worse, so the only pair is (1, 2).
    let row = json!({"instruction": "Q", "completions": [
        rated("short", "4"), rated("longer one", "4"), rated("bad", "1"),
    ]});
    let mut stats = BuildStats::default();
    let ex = b.uf(&[row], 7, &mut stats).unwrap();
    assert_eq!((stats.sft, stats.judgments, stats.no_pair), (1, 2, 0));
    assert!(s
        .text(&ex[0])
        .ends_with("\n<|assistant|>\nlonger one<|im_end|>"));
    let base = &s.judge.principles[0].principle;
    for (e, a, bb, letter) in [
        (&ex[1], "longer one", "bad", " A"),
        (&ex[2], "bad", "longer one", " B"),
    ] {
        let text = s.text(e);
        assert!(
            text.contains(&format!(
                "Response A:\n-----\n{a}\n-----\n\nResponse B:\n-----\n{bb}\n-----"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}{letter}", base.assistant)),
            "{text}"
        );
        // Only the verdict (and, if the judgment builder keeps it, the EOS) is learned.
        let learned = s.learned(e);
        assert_eq!(learned.strip_suffix(EOS).unwrap_or(&learned), letter);
    }
    // All means equal: no strict comparison, SFT only.
    let mut stats = BuildStats::default();
    let ex = b
        .uf(
            &[json!({"instruction": "Q", "completions": [rated("a", "3"), rated("bb", "3")]})],
            7,
            &mut stats,
        )
        .unwrap();
    assert_eq!((ex.len(), stats.sft, stats.no_pair), (1, 1, 1));
}

#[test]
fn sampling_is_seeded_per_row() {
    let s = setup("uf_jsft.yaml");
    let b = s.builder();
    let row = json!({"instruction": "Q", "completions": [
        rated("best", "5"), rated("mid", "3"), rated("low", "1"),
    ]});
    let build = |rows: &[Value], seed: u64| b.uf(rows, seed, &mut BuildStats::default()).unwrap();
    // Which response is rejected, by seed: both strictly worse ones occur.
    let rejected: BTreeSet<bool> = (0..40)
        .map(|seed| {
            s.text(&build(std::slice::from_ref(&row), seed)[1])
                .contains("-----\nmid\n")
        })
        .collect();
    assert_eq!(rejected.len(), 2);
    // Same seed, same examples; row 1's draw does not depend on row 0's content.
    let other = json!({"instruction": "Z", "completions": [rated("z", "2"), rated("y", "1")]});
    let x = build(&[other.clone(), row.clone()], 3);
    assert_eq!(x, build(&[other, row.clone()], 3));
    let y = build(&[json!({"instruction": "W", "completions": []}), row], 3);
    assert_eq!(x[3..], y[..]);
}

#[test]
fn bad_rows_are_counted_with_the_first_error() {
    let s = setup("uf_jsft_pr.yaml");
    let b = s.builder();
    let good = completion("ok", "S", &[("helpfulness", "3", "fine", None)]);
    let rows = [
        json!({"completions": [good.clone()]}),
        json!({"instruction": "Q", "completions": [{"custom_system_prompt": "S", "annotations": {}}]}),
        json!({"instruction": "Q", "completions": [completion("x", "S", &[("helpfulness", "great", "r", None)])]}),
        json!({"instruction": "Q", "completions": [{"response": "x", "custom_system_prompt": "S", "annotations": []}]}),
        json!({"instruction": "Q", "completions": [good.clone(),
            json!({"response": "y", "custom_system_prompt": "S", "annotations": {"helpfulness": {"Rating": "1"}}})]}),
        json!({"instruction": "Q", "completions": []}),
        json!({"instruction": "Q", "completions": [good]}),
    ];
    let mut stats = BuildStats::default();
    let ex = b.uf(&rows, 0, &mut stats).unwrap();
    assert_eq!(
        (
            stats.rows,
            stats.bad_rows,
            stats.empty_rows,
            stats.sft,
            ex.len()
        ),
        (7, 5, 1, 1, 1)
    );
    assert_eq!(
        stats.first_error.as_deref(),
        Some("row 1: missing string field `instruction`")
    );
    for (row, want) in [
        (&rows[1], "completions[0]: missing string field `response`"),
        (
            &rows[2],
            "completions[0].annotations.helpfulness.Rating `great` is neither a number nor \"N/A\"",
        ),
        (
            &rows[3],
            "completions[0]: missing object field `annotations`",
        ),
    ] {
        assert_eq!(UfRow::from_row(row).unwrap_err(), want);
    }
    // A rationale the Text rule must read is missing: the whole row is rejected.
    let mut stats = BuildStats::default();
    b.uf(&rows[4..5], 0, &mut stats).unwrap();
    assert_eq!(
        stats.first_error.as_deref(),
        Some("row 1: completions[1].annotations.helpfulness has no `Rationale`")
    );
}

#[test]
fn rationale_template_comes_from_the_config() {
    let root = common::root().join("configs");
    let read = |f: &str| {
        TrainConfig::from_file(&root.join(f))
            .unwrap()
            .rationale_template()
            .unwrap()
    };
    assert_eq!(
        read("uf_jsft_pr.yaml").as_deref(),
        Some("\nEvaluation of Response {position}:")
    );
    assert_eq!(read("uf_jsft.yaml"), None);
    assert_eq!(format_rationale("{{x}} {position}", "B").unwrap(), "{x} B");
    assert!(format_rationale("{pos}", "A").is_err());
    // A decision without a rationale template is refused up front.
    let s = setup("uf_jsft_pr.yaml");
    let b = s.builder().with_rationale(None);
    assert!(b.uf(&[], 0, &mut BuildStats::default()).is_err());
}
