//! On-policy improvement, for real: from the committed JSFT checkpoint of the synthetic
//! arithmetic task (`tests/fixtures/synthetic/arith-jsft`, whose policy answers "The
//! answer is N" instead of the bare sum about a quarter of the time and sometimes gets
//! the sum wrong), a short `training self-judge` run — the policy's own samples judged by
//! the same network with its LoRA adapters off — raises the share of exactly correct
//! answers on held-out prompts (questions never used in self-judge training), as scored
//! by the task's oracle, not by the model.

mod common;

use std::path::Path;

use self_judge_engine::generate::{generate, GenerationRequest};
use self_judge_engine::sampling::SamplingParams;
use self_judge_model::{LoadOptions, LoadedModel};
use self_judge_tokenizer::ChatMessage;

use common::{arith_jsft as fixture, ok, root, self_judge, self_judge_config as config};

/// Questions (a, b) of an HH-format prompt file.
fn questions(file: &str) -> Vec<(u32, u32)> {
    std::fs::read_to_string(root().join(file))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let c = v["chosen"].as_str().unwrap();
            let q = c.split("What is ").nth(1).unwrap();
            let a: u32 = q[..1].parse().unwrap();
            let b: u32 = q[4..5].parse().unwrap();
            (a, b)
        })
        .collect()
}

/// Of `k` samples per question (temperature 1, top-p 0.9, as the self-judge run samples):
/// the share that is exactly the bare sum (the task's oracle), and the share that takes
/// the verbose "The answer is ..." form.
fn policy_accuracy(model_dir: &Path, qs: &[(u32, u32)], k: usize) -> (f64, f64) {
    let m = LoadedModel::load(model_dir, &LoadOptions::default()).unwrap();
    let chat = m.chat_template().unwrap().clone();
    let reqs: Vec<GenerationRequest> = qs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let text = chat
                .render(
                    &[
                        ChatMessage::new("system", "Judge."),
                        ChatMessage::new("user", format!("What is {a} + {b}?")),
                    ],
                    true,
                    None,
                    Some("<|im_end|>"),
                )
                .unwrap();
            GenerationRequest {
                request: i as u64,
                prompt_ids: m.tokenizer.encode(&text, true).unwrap(),
                params: SamplingParams {
                    temperature: 1.0,
                    top_p: 0.9,
                    seed: Some(1000 + i as u64),
                    max_new_tokens: 20,
                    ..Default::default()
                },
                n: k,
            }
        })
        .collect();
    let out = generate(&m, &reqs).unwrap();
    let correct: usize = out
        .iter()
        .zip(qs)
        .map(|(samples, (a, b))| {
            samples
                .iter()
                .filter(|s| s.text.trim() == (a + b).to_string())
                .count()
        })
        .sum();
    let verbose = out
        .iter()
        .flatten()
        .filter(|s| s.text.starts_with("The answer"))
        .count();
    let n = (qs.len() * k) as f64;
    (correct as f64 / n, verbose as f64 / n)
}

#[test]
fn self_judge_improves_the_policy_on_held_out_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let held_out = questions("tests/fixtures/synthetic/arith_sj_heldout.jsonl");
    let trained = questions("tests/fixtures/synthetic/arith_sj_train.jsonl");
    let (before, verbose_before) = policy_accuracy(&fixture(), &held_out, 64);
    let (before_train, _) = policy_accuracy(&fixture(), &trained, 64);
    let err = ok(self_judge(&config(dir.path(), |t| t), &[]));
    let out = dir.path().join("out");
    let (after, verbose_after) = policy_accuracy(&out, &held_out, 64);
    let (after_train, _) = policy_accuracy(&out, &trained, 64);
    eprintln!(
        "oracle accuracy of sampled answers: held-out prompts {before:.3} -> {after:.3} (verbose {verbose_before:.3} -> {verbose_after:.3}); training prompts {before_train:.3} -> {after_train:.3}\n{err}"
    );
    assert!(
        before < 0.8 && verbose_before > 0.1,
        "the JSFT policy must be imperfect: {before} {verbose_before}"
    );
    assert!(after >= before + 0.08, "held-out {before:.3} -> {after:.3}");
    assert!(
        verbose_after < verbose_before / 2.0,
        "verbose {verbose_before:.3} -> {verbose_after:.3}"
    );
    // The run logged the seed's metrics, and its reward margin grew.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    let logs = state["log_history"].as_array().unwrap();
    let train_logs: Vec<&serde_json::Value> =
        logs.iter().filter(|l| l.get("loss").is_some()).collect();
    for k in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/policy_chosen",
        "logps/policy_rejected",
        "logps/reference_chosen",
        "logps/reference_rejected",
        "logits/policy_chosen",
        "logits/reference_rejected",
        "tokens/chosen_length_mean",
        "tokens/rejected_length_std",
        "grad_norm",
        "learning_rate",
    ] {
        assert!(
            train_logs[0][k].as_f64().is_some_and(f64::is_finite),
            "{k}: {}",
            train_logs[0]
        );
    }
    let eval = logs.last().unwrap();
    for k in [
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
        "eval_logps/policy_chosen",
    ] {
        assert!(eval[k].as_f64().is_some_and(f64::is_finite), "{k}: {eval}");
    }
    // Relative to the reference (margin 0 before training), the policy now prefers the
    // dataset's correct answers over its wrong ones on the held-out prompts.
    let margin = eval["eval_rewards/margins"].as_f64().unwrap();
    let acc = eval["eval_rewards/accuracies"].as_f64().unwrap();
    assert!(
        margin > 0.0 && acc >= 0.7,
        "eval margin {margin}, accuracy {acc}"
    );
    assert!(out.join("adapter/adapter_model.safetensors").exists());
    assert_eq!(&std::fs::read(out.join("loss.png")).unwrap()[1..4], b"PNG");
}
