//! The shipped judge (`adapters/smollm2-judge` on SmolLM2-135M-Instruct): the adapter
//! merges at load (or attaches unmerged, with the same verdicts and answers), judges the hand-written obvious pairs better than the zero-shot
//! model, still answers questions as a policy, and the README's tournament example picks
//! a fruit through the CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{smollm2, smollm2_path};
use self_judge::engine::{generate, DirectScorer, GenerationRequest, SamplingParams};
use self_judge::judge::{Judge, JudgeConfig, JudgeOptions, Pair, Side};
use self_judge::model::{LoadOptions, LoadedModel};
use self_judge::tokenizer::ChatMessage;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn adapter() -> PathBuf {
    root().join("adapters/smollm2-judge")
}

fn config() -> JudgeConfig {
    JudgeConfig::from_file(&root().join("configs/smollm2_judge.yaml")).unwrap()
}

/// The obvious pairs with the side of the better response.
fn obvious() -> Vec<(Pair, Side)> {
    std::fs::read_to_string(root().join("scripts/data/obvious_pairs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let better = if s("better") == "a" { Side::A } else { Side::B };
            (
                Pair {
                    context: s("context"),
                    response_a: s("response_a"),
                    response_b: s("response_b"),
                },
                better,
            )
        })
        .collect()
}

/// Every verdict of `model` on `pairs`.
fn verdicts(model: &LoadedModel, pairs: &[(Pair, Side)]) -> Vec<self_judge::judge::Verdict> {
    let judge = Judge::new(model, &config(), &JudgeOptions::default()).unwrap();
    let scorer = DirectScorer {
        decoder: &model.decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 4096,
    };
    let input: Vec<Pair> = pairs.iter().map(|(p, _)| p.clone()).collect();
    let v = judge.judge(&input, &scorer).unwrap();
    assert_eq!(v.len(), pairs.len());
    v
}

#[test]
fn an_attached_adapter_judges_and_answers_as_the_merged_one() {
    let pairs = obvious();
    let merged =
        LoadedModel::load_adapted(&smollm2_path(), &LoadOptions::default(), Some(&adapter()))
            .unwrap();
    let attached = smollm2().with_adapter(&adapter()).unwrap();
    assert_eq!(attached.adapter.as_deref(), Some(adapter().as_path()));
    let (m, a) = (verdicts(&merged, &pairs), verdicts(&attached, &pairs));
    let mut worst = 0f64;
    assert_eq!((m.len(), a.len()), (pairs.len(), pairs.len()));
    for (m, a) in m.iter().zip(&a) {
        assert_eq!(m.principles.len(), a.principles.len());
        for (pm, pa) in m.principles.iter().zip(&a.principles) {
            for (x, y) in [
                (pm.ab.p_a, pa.ab.p_a),
                (pm.ab.p_b, pa.ab.p_b),
                (pm.ba.p_a, pa.ba.p_a),
                (pm.ba.p_b, pa.ba.p_b),
            ] {
                worst = worst.max((x - y).abs());
            }
        }
    }
    eprintln!("attached vs merged: largest judge probability difference {worst:.2e}");
    assert!(worst < 1e-5, "attached vs merged: {worst}");
    // The base it was attached to is unchanged: it still judges as the zero-shot model.
    let base_again = verdicts(smollm2(), &pairs);
    assert!(smollm2()
        .decoder
        .layers
        .iter()
        .all(|l| l.q_proj.lora.is_none()));
    assert_eq!(base_again.len(), a.len());
    let moved = base_again
        .iter()
        .zip(&a)
        .any(|(b, a)| (b.score_a - a.score_a).abs() > 1e-3);
    assert!(moved, "the adapter changed no verdict");
    let questions = [
        "What is the capital of France?",
        "How many legs does a dog have?",
    ];
    assert_eq!(answers(&merged, &questions), answers(&attached, &questions));
}

/// (correct verdicts, order-consistent verdicts) of `model` on `pairs`.
fn score(model: &LoadedModel, pairs: &[(Pair, Side)]) -> (usize, usize) {
    let verdicts = verdicts(model, pairs);
    let right = verdicts
        .iter()
        .zip(pairs)
        .filter(|(v, (_, better))| v.winner == *better)
        .count();
    (right, verdicts.iter().filter(|v| v.consistent).count())
}

#[test]
fn the_shipped_adapter_judges_obvious_pairs() {
    let pairs = obvious();
    assert_eq!(pairs.len(), 30);
    let jsft =
        LoadedModel::load_adapted(&smollm2_path(), &LoadOptions::default(), Some(&adapter()))
            .unwrap();
    assert_eq!(jsft.adapter.as_deref(), Some(adapter().as_path()));
    let (right, consistent) = score(&jsft, &pairs);
    let (base_right, base_consistent) = score(smollm2(), &pairs);
    eprintln!(
        "obvious pairs: jsft {right}/30 right, {consistent} consistent; zero-shot {base_right}/30, {base_consistent}"
    );
    // Measured with the committed adapter (bench/QUALITY.md): 16/30 right, 5 of them
    // order-consistent; the zero-shot model: 12/30, none consistent. One verdict of
    // margin for floating-point differences between machines.
    assert!(right >= 15, "jsft judged {right}/30 obvious pairs right");
    assert!(consistent >= 4, "jsft consistent on {consistent}/30");
    assert!(
        base_consistent <= 2,
        "zero-shot consistent on {base_consistent}/30"
    );
    assert!(
        right > base_right + 2,
        "jsft {right} vs zero-shot {base_right}"
    );
}

/// Greedy answers of `model` to `questions`, each through the chat template.
fn answers(model: &LoadedModel, questions: &[&str]) -> Vec<String> {
    let chat = model.chat_template().unwrap();
    let reqs: Vec<GenerationRequest> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let text = chat
                .render(
                    &[ChatMessage::new("user", *q)],
                    true,
                    model.tokenizer.bos_token.as_deref(),
                    model.tokenizer.eos_token.as_deref(),
                )
                .unwrap();
            GenerationRequest {
                request: i as u64,
                prompt_ids: model.tokenizer.encode(&text, true).unwrap(),
                params: SamplingParams {
                    temperature: 0.0,
                    max_new_tokens: 48,
                    ..SamplingParams::default()
                },
                n: 1,
            }
        })
        .collect();
    let out = generate(model, &reqs).unwrap();
    assert_eq!(out.len(), questions.len());
    out.into_iter().map(|g| g[0].text.clone()).collect()
}

#[test]
fn the_shipped_adapter_is_still_a_policy() {
    // A judge trained on verdicts alone answered "Paris", "The sky" and "The opposite of
    // hot" here (it had learned to stop after a word or two); the SFT examples of
    // scripts/data/distill_policy.py keep it answering in sentences like the base model.
    let cases = [
        ("What is the capital of France?", Some("paris")),
        ("What color is the sky on a clear day?", None),
        ("How many legs does a dog have?", None),
        ("What is the opposite of hot?", Some("cold")),
    ];
    let questions: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let jsft =
        LoadedModel::load_adapted(&smollm2_path(), &LoadOptions::default(), Some(&adapter()))
            .unwrap();
    for (model, name) in [(smollm2(), "zero-shot"), (&jsft, "jsft")] {
        let got = answers(model, &questions);
        assert_eq!(got.len(), cases.len());
        for (answer, (q, word)) in got.iter().zip(&cases) {
            let lower = answer.to_lowercase();
            assert!(
                answer.split_whitespace().count() >= 5 && word.is_none_or(|w| lower.contains(w)),
                "{name}: {q} -> {answer:?}"
            );
        }
    }
}

#[test]
fn the_readme_tournament_picks_a_fruit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cands.jsonl");
    std::fs::write(
        &input,
        r#"{"context": "User: Name a fruit.", "responses": ["Apple.", "A car.", "Mango."]}"#,
    )
    .unwrap();
    for seed in ["1", "2", "3"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_self-judge"));
        cmd.arg("tournament")
            .arg("--model")
            .arg(smollm2_path())
            .arg("--adapter")
            .arg(adapter())
            .arg("--config")
            .arg(root().join("configs/smollm2_judge.yaml"))
            .arg("--input")
            .arg(&input)
            .args(["--seed", seed]);
        let line: Value = serde_json::from_str(&common::stdout_of(&mut cmd)).unwrap();
        let winner = line["winner"].as_str().unwrap();
        assert!(
            winner == "Apple." || winner == "Mango.",
            "seed {seed}: {line}"
        );
    }
}

#[test]
fn a_bad_adapter_folder_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let e = LoadedModel::load_adapted(&smollm2_path(), &LoadOptions::default(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
    let quantized = LoadOptions {
        quantized: true,
        ..LoadOptions::default()
    };
    let e = LoadedModel::load_adapted(&smollm2_path(), &quantized, Some(&adapter()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("drop --quantized"), "{e}");
}
