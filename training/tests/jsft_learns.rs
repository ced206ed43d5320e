//! Learning for real: a tiny model from `training init`, trained by `training jsft` on
//! the synthetic arithmetic task, judges held-out pairs (wrong answers never seen in
//! training, correct answer in either position) through the engine's judge core, both
//! orders, and must pick the correct answer at least 90% of the time — measured by the
//! task's own oracle labels.

mod common;

use self_judge_engine::scorer::CachedScorer;
use self_judge_judge::{Judge, JudgeConfig, JudgeOptions, Pair, Side};
use self_judge_model::{LoadOptions, LoadedModel};

use common::{arith_config, root};

#[test]
fn jsft_judge_reaches_90_percent_on_held_out_pairs() {
    let dir = tempfile::tempdir().unwrap();
    assert!(common::init(&dir.path().join("init"), 64, &[])
        .status
        .success());
    let cfg = arith_config(dir.path(), None);
    let out = common::run_training("jsft", &cfg, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let model = LoadedModel::load(&dir.path().join("out"), &LoadOptions::default()).unwrap();
    let judge = Judge::new(
        &model,
        &JudgeConfig::from_file(&cfg).unwrap(),
        &JudgeOptions::default(),
    )
    .unwrap();
    let scorer = CachedScorer::new(&model.decoder, judge.token_ids, 8192, 1 << 28);
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(root().join("tests/fixtures/synthetic/arith_heldout.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let pairs: Vec<Pair> = rows
        .iter()
        .map(|r| Pair {
            context: r["context"].as_str().unwrap().into(),
            response_a: r["response_a"].as_str().unwrap().into(),
            response_b: r["response_b"].as_str().unwrap().into(),
        })
        .collect();
    let verdicts = judge.judge(&pairs, &scorer).unwrap();
    let correct = rows
        .iter()
        .zip(&verdicts)
        .filter(|(r, v)| (r["correct"] == "a") == (v.winner == Side::A))
        .count();
    let accuracy = correct as f64 / rows.len() as f64;
    eprintln!(
        "held-out judge accuracy {accuracy:.2} ({correct}/{})",
        rows.len()
    );
    assert!(accuracy >= 0.9, "held-out judge accuracy {accuracy:.2}");
}
