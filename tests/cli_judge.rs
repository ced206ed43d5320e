//! `self-judge judge` / `self-judge tournament` on the real SmolLM2 model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::smollm2_path;
use self_judge::engine::scorer::CachedScorer;
use self_judge::judge::{Judge, JudgeConfig, JudgeOptions, Pair, Verdict};
use self_judge::model::{LoadOptions, LoadedModel};
use serde_json::Value;

fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smollm2_hh_judge.yaml")
}

fn run(sub: &str, input: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_self-judge"))
        .arg(sub)
        .arg("--model")
        .arg(smollm2_path())
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(input)
        .args(extra)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn judge_outputs_one_verdict_per_line_equal_to_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = vec![
        Pair {
            context: "User: 2+2?".into(),
            response_a: "4".into(),
            response_b: "5".into(),
        },
        Pair {
            context: "User: Greet me.".into(),
            response_a: "".into(),
            response_b: "Hello there!".into(),
        },
        Pair {
            context: "".into(),
            response_a: "Yes.".into(),
            response_b: "No.".into(),
        },
    ];
    let input = dir.path().join("pairs.jsonl");
    let text: Vec<String> = pairs
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    std::fs::write(&input, text.join("\n") + "\n\n").unwrap();
    let out = run("judge", &input, &["--verbose"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\" A\" = 330, \" B\" = 389"));
    let got: Vec<Verdict> = lines(&out)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();

    let model = LoadedModel::load(&smollm2_path(), &LoadOptions::default()).unwrap();
    let judge = Judge::new(
        &model,
        &JudgeConfig::from_file(&config_path()).unwrap(),
        &JudgeOptions::default(),
    )
    .unwrap();
    let scorer = CachedScorer::new(&model.decoder, judge.token_ids, 8192, 2048 << 20);
    let want = judge.judge(&pairs, &scorer).unwrap();
    assert_eq!(got, want);

    // --output writes the same lines to a file.
    let file = dir.path().join("out.jsonl");
    let out = run("judge", &input, &["--output", file.to_str().unwrap()]);
    assert!(out.status.success());
    let written: Vec<Verdict> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written, want);
}

#[test]
fn invalid_lines_are_all_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"context\": \"c\", \"response_a\": \"a\", \"response_b\": \"b\"}\n{not json\n{\"context\": \"c\", \"response_a\": \"a\"}\n",
    )
    .unwrap();
    let file = dir.path().join("out.jsonl");
    let out = run("judge", &input, &["--output", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("bad.jsonl:3:") && err.contains("response_b"),
        "{err}"
    );
    assert!(!err.contains("bad.jsonl:1:"), "{err}");
    assert!(!file.exists());
}

#[test]
fn unknown_principle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.jsonl");
    std::fs::write(
        &input,
        "{\"context\": \"c\", \"response_a\": \"a\", \"response_b\": \"b\"}\n",
    )
    .unwrap();
    let out = run("judge", &input, &["--principles", "helpful,witty"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown principle `witty`"));
}

#[test]
fn tournament_is_replayable_with_a_seed_and_reports_brackets() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"context\": \"User: Name a fruit.\", \"responses\": [\"Apple.\", \"A car.\", \"Banana, a yellow fruit.\", \"Rock.\", \"Mango.\"]}\n",
            "{\"context\": \"User: Say hi.\", \"responses\": [\"Hi!\"]}\n",
            "{\"context\": \"User: Capital of Italy?\", \"responses\": [\"Rome.\", \"Paris.\"]}\n",
        ),
    )
    .unwrap();
    let a = lines(&run("tournament", &input, &["--seed", "5", "--bracket"]));
    let b = lines(&run("tournament", &input, &["--seed", "5", "--bracket"]));
    assert_eq!(a, b);
    assert_eq!(a.len(), 3);
    // The single candidate wins without a round.
    assert_eq!(a[1]["winner"], "Hi!");
    assert_eq!(a[1]["winner_index"], 0);
    assert_eq!(a[1]["bracket"]["rounds"].as_array().unwrap().len(), 0);
    // Five candidates: rounds of 2 matches + bye, then 1 match + bye, then 1 match.
    let rounds = a[0]["bracket"]["rounds"].as_array().unwrap();
    let shape: Vec<(usize, bool)> = rounds
        .iter()
        .map(|r| (r["matches"].as_array().unwrap().len(), !r["bye"].is_null()))
        .collect();
    assert_eq!(shape, vec![(2, true), (1, true), (1, false)]);
    let idx = a[0]["winner_index"].as_u64().unwrap() as usize;
    let resp = [
        "Apple.",
        "A car.",
        "Banana, a yellow fruit.",
        "Rock.",
        "Mango.",
    ];
    assert_eq!(a[0]["winner"], resp[idx]);
    // Without --bracket the field is absent.
    let plain = lines(&run("tournament", &input, &["--seed", "5"]));
    assert!(plain[0].get("bracket").is_none());
    assert_eq!(plain[0]["winner_index"], a[0]["winner_index"]);
}

#[test]
fn empty_responses_list_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    std::fs::write(
        &input,
        "{\"context\": \"c\", \"responses\": [\"x\"]}\n{\"context\": \"c\", \"responses\": []}\n",
    )
    .unwrap();
    let out = run("tournament", &input, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("t.jsonl:2: `responses` is empty"), "{err}");
}
