//! Helpers shared by the training integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `training init` of a tiny 2-layer model over the tiny-chat tokenizer; returns the
/// command output (the caller checks success or the error).
pub fn init(out: &Path, hidden: usize, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_training"))
        .args([
            "init",
            "--hidden",
            &hidden.to_string(),
            "--layers",
            "2",
            "--heads",
            "4",
            "--kv-heads",
            "2",
        ])
        .args(["--max-positions", "256", "--tokenizer"])
        .arg(root().join("tests/fixtures/tiny-chat/tokenizer.json"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Writes `dir/jsft.yaml`: the synthetic arithmetic config with output `dir/out`, model
/// `dir/init`, the committed training data, and `steps` optimizer steps logged every
/// 10 steps (or the config's own schedule with `None`).
pub fn arith_config(dir: &Path, steps: Option<usize>) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("tests/fixtures/synthetic/arith_jsft.yaml"))
        .unwrap()
        .replace("\"target/arith-jsft\"", &format!("{:?}", dir.join("out")))
        .replace("\"target/arith-init\"", &format!("{:?}", dir.join("init")))
        .replace(
            "\"tests/fixtures/synthetic/arith_train.jsonl\"",
            &format!(
                "{:?}",
                root().join("tests/fixtures/synthetic/arith_train.jsonl")
            ),
        );
    if let Some(steps) = steps {
        text = text
            .replace("max_steps: 2000", &format!("max_steps: {steps}"))
            .replace("logging_steps: 200", "logging_steps: 10");
    }
    let p = dir.join("jsft.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The committed JSFT checkpoint the self-judge tests start from.
pub fn arith_jsft() -> PathBuf {
    root().join("tests/fixtures/synthetic/arith-jsft")
}

/// Writes `dir/sj.yaml`: the committed self-judge config with absolute paths, output
/// `dir/out`, rewritten by `edit`.
pub fn self_judge_config(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/synthetic/arith_self_judge.yaml"))
            .unwrap()
            .replace(
                "\"target/arith-self-judge\"",
                &format!("{:?}", dir.join("out")),
            )
            .replace("\"tests/", &format!("\"{}/tests/", root().display()));
    let p = dir.join("sj.yaml");
    std::fs::write(&p, edit(text)).unwrap();
    p
}

/// Runs `training <command> --config cfg extra...`.
pub fn run_training(command: &str, cfg: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_training"))
        .arg(command)
        .arg("--config")
        .arg(cfg)
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `training self-judge --config cfg extra...`.
pub fn self_judge(cfg: &Path, extra: &[&str]) -> std::process::Output {
    run_training("self-judge", cfg, extra)
}

/// Asserts success and returns stderr.
pub fn ok(out: std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

/// Last-position logits of one prompt.
pub fn logits(m: &self_judge_model::Decoder, prompt: &[u32]) -> Vec<f32> {
    m.last_logits(&[prompt])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest absolute difference of two equally long vectors.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
