//! Broken checkpoints fail with an error naming the cause, never a panic.

mod common;

use std::path::Path;

use common::fixture;
use self_judge::model::{LoadOptions, LoadedModel};

fn copy_fixture(to: &Path) {
    let from = fixture("parity/tiny-llama");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn load_err(path: &Path) -> String {
    LoadedModel::load(path, &LoadOptions::default())
        .unwrap_err()
        .to_string()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

#[test]
fn missing_path_weights_and_tokenizer() {
    let d = tempfile::tempdir().unwrap();
    let e = load_err(&d.path().join("nope"));
    assert!(e.contains("does not exist"), "{e}");
    copy_fixture(d.path());
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("neither model.safetensors"), "{e}");
    copy_fixture(d.path());
    let e = load_err(d.path());
    assert!(e.contains("tokenizer.json is missing"), "{e}");
}

#[test]
fn missing_shard_is_named() {
    let d = tempfile::tempdir().unwrap();
    let from = fixture("parity/tiny-qwen2");
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
    ] {
        std::fs::copy(from.join(f), d.path().join(f)).unwrap();
    }
    let e = load_err(d.path());
    assert!(
        e.contains("model-00002-of-00003.safetensors is missing"),
        "{e}"
    );
}

#[test]
fn corrupt_weights_are_refused() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    std::fs::write(
        d.path().join("model.safetensors"),
        b"this is not safetensors",
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(e.contains("cannot read safetensors"), "{e}");
    let bytes = std::fs::read(fixture("parity/tiny-llama/model.safetensors")).unwrap();
    std::fs::write(
        d.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(e.contains("cannot read safetensors"), "{e}");
    let gguf = d.path().join("bad.gguf");
    std::fs::write(&gguf, b"GGUF but truncated").unwrap();
    let e = load_err(&gguf);
    assert!(e.contains("not a valid GGUF"), "{e}");
}

#[test]
fn unknown_architecture_and_missing_field() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    edit_config(d.path(), |v| v["model_type"] = "falcon".into());
    let e = load_err(d.path());
    assert!(e.contains("unknown model_type `falcon`"), "{e}");
    copy_fixture(d.path());
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("num_hidden_layers");
    });
    let e = load_err(d.path());
    assert!(e.contains("`num_hidden_layers`"), "{e}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    edit_config(d.path(), |v| v["intermediate_size"] = 96.into());
    let e = load_err(d.path());
    assert!(
        e.contains("gate_proj.weight` has shape [128, 64] but the config implies [96, 64]"),
        "{e}"
    );
    copy_fixture(d.path());
    edit_config(d.path(), |v| v["num_hidden_layers"] = 3.into());
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.2.") && e.contains("missing"),
        "{e}"
    );
}
