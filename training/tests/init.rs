//! `training init` writes a checkpoint the server's loader accepts, deterministically.

mod common;

use std::path::Path;
use std::process::Command;

use self_judge_model::{LoadOptions, LoadedModel};

fn init(out: &Path, extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["--seed", "5"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    common::init(out, 32, &args)
}

#[test]
fn init_writes_a_loadable_deterministic_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("llama", vec![]),
        ("qwen2", vec!["--arch", "qwen2", "--untied"]),
    ] {
        let a = dir.path().join(format!("{name}-a"));
        let b = dir.path().join(format!("{name}-b"));
        assert!(init(&a, &extra).status.success());
        assert!(init(&b, &extra).status.success());
        assert_eq!(
            std::fs::read(a.join("model.safetensors")).unwrap(),
            std::fs::read(b.join("model.safetensors")).unwrap()
        );
        let m = LoadedModel::load(&a, &LoadOptions::default()).unwrap();
        assert_eq!(m.decoder.cfg.model_type, name);
        assert_eq!(m.decoder.cfg.vocab_size, 266);
        assert_eq!(m.decoder.cfg.tie_word_embeddings, name == "llama");
        assert!(m.chat_template.is_some());
        assert_eq!(m.tokenizer.eos_token.as_deref(), Some("<|im_end|>"));
        let ids = m.tokenizer.encode("the one", true).unwrap();
        let logits: Vec<Vec<f32>> = m.decoder.last_logits(&[ids]).unwrap().to_vec2().unwrap();
        assert!(logits[0].iter().all(|x| x.is_finite()));
    }
}

#[test]
fn init_refuses_bad_shapes_and_unknown_eos() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_training"))
        .args(["init", "--hidden", "30", "--heads", "4", "--tokenizer"])
        .arg(common::root().join("tests/fixtures/tiny-chat/tokenizer.json"))
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of --heads"));
    let out = init(&dir.path().join("y"), &["--eos-token", "</nope>"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EOS token `</nope>`"));
}
