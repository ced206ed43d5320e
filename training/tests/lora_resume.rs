//! LoRA JSFT (PEFT adapter files, merged checkpoint = base + adapter, reference = base
//! with adapters off) and `--resume` (an interrupted run ends bit-identical to an
//! uninterrupted one, for LoRA with dropout and for full fine-tuning).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use self_judge_model::{LoadOptions, LoadedModel};
use training::lora::LoraSpec;
use training::model::TrainModel;

const PEFT: &str =
    "peft_config:\n  r: 4\n  lora_alpha: 8\n  lora_dropout: 0.1\n  target_modules: [q_proj, v_proj, down_proj]\n";

fn spec() -> LoraSpec {
    LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    }
}

/// A config in `dir` (model `init` beside it) training `steps` steps, saving every 4.
fn config(dir: &Path, init: &Path, steps: usize, lora: bool) -> PathBuf {
    let p = common::arith_config(dir, Some(steps));
    let mut text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(&format!("{:?}", dir.join("init")), &format!("{init:?}"))
        .replace(
            "save_strategy: \"no\"",
            "save_strategy: \"steps\"\n  save_steps: 4",
        );
    if lora {
        text = text.replace("jsft_args:", &format!("{PEFT}jsft_args:"));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn jsft(cfg: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_training"))
        .arg("jsft")
        .arg("--config")
        .arg(cfg)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn lora_run_writes_a_peft_adapter_and_a_merged_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    assert!(common::init(&init, 32, &[]).status.success());
    let err = jsft(&config(dir.path(), &init, 12, true), &[]);
    assert!(
        err.contains("LoRA r=4 alpha=8 dropout=0.1 on q_proj,v_proj,down_proj"),
        "{err}"
    );
    let out = dir.path().join("out");

    let ac: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ac["peft_type"], "LORA");
    assert_eq!(ac["task_type"], "CAUSAL_LM");
    assert_eq!(ac["r"], 4);
    assert_eq!(ac["lora_alpha"], 8.0);
    assert_eq!(
        ac["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let adapter =
        candle_core::safetensors::load(out.join("adapter/adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut keys: Vec<&String> = adapter.keys().collect();
    keys.sort();
    let mut want = Vec::new();
    for i in 0..2 {
        for m in ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"] {
            for ab in ["A", "B"] {
                want.push(format!(
                    "base_model.model.model.layers.{i}.{m}.lora_{ab}.weight"
                ));
            }
        }
    }
    assert_eq!(keys, want.iter().collect::<Vec<_>>());
    let a = &adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    assert_eq!(a.dims(), &[4, 32]);
    assert_eq!(b.dims(), &[32, 4]);
    let b_abs: f32 = b.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert!(b_abs > 0.0, "B was trained");

    // Merged checkpoint == base + adapter; adapters off == the base model.
    let merged = LoadedModel::load(&out, &LoadOptions::default()).unwrap();
    let base = LoadedModel::load(&init, &LoadOptions::default()).unwrap();
    let prompt = merged
        .tokenizer
        .encode(
            "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n",
            false,
        )
        .unwrap();
    let spec = spec();
    let with = TrainModel::load(&init, Some((&spec, 1))).unwrap();
    with.lora
        .as_ref()
        .unwrap()
        .load_weights(&out.join("adapter"))
        .unwrap();
    let dec = with.decoder.clone();
    let adapted = common::logits(&dec, &prompt);
    let served = common::logits(&merged.decoder, &prompt);
    let d = common::max_diff(&adapted, &served);
    assert!(d < 1e-5, "merged vs base+adapter: {d}");
    // What `self-judge serve --adapter` loads: the base with the PEFT folder merged.
    let adapted_at_load =
        LoadedModel::load_adapted(&init, &LoadOptions::default(), Some(&out.join("adapter")))
            .unwrap();
    let d = common::max_diff(&common::logits(&adapted_at_load.decoder, &prompt), &served);
    assert!(d < 1e-5, "base --adapter vs merged checkpoint: {d}");
    let plain = common::logits(&base.decoder, &prompt);
    assert!(
        common::max_diff(&plain, &served) > 1e-3,
        "the adapter changed the model"
    );
    let off = common::logits(&with.without_adapters(), &prompt);
    assert!(
        common::max_diff(&off, &plain) < 1e-6,
        "adapters off == base"
    );
    // Weights LoRA does not target are the base's, bit for bit.
    let w_merged =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let w_base =
        candle_core::safetensors::load(init.join("model.safetensors"), &Device::Cpu).unwrap();
    for name in [
        "model.layers.1.self_attn.k_proj.weight",
        "model.embed_tokens.weight",
    ] {
        let x: Vec<f32> = w_merged[name].flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = w_base[name]
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(x, y, "{name}");
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn log_history(out: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    s["log_history"].clone()
}

fn check_resume(lora: bool) {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    assert!(common::init(&init, 32, &[]).status.success());
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::create_dir_all(&parts).unwrap();
    jsft(&config(&whole, &init, 14, lora), &[]);
    let cfg = config(&parts, &init, 14, lora);
    let err = jsft(&cfg, &["--stop-after", "6"]);
    assert!(err.contains("stopped after step 6"), "{err}");
    let out = parts.join("out");
    assert!(out.join("checkpoint-4").is_dir() && out.join("checkpoint-6").is_dir());
    assert!(!out.join("config.json").exists(), "no final model yet");
    // A save killed half-way leaves only a temporary folder, which resume ignores.
    std::fs::create_dir_all(out.join(".checkpoint-8.tmp-1")).unwrap();
    std::fs::create_dir_all(out.join("checkpoint-9")).unwrap();
    let err = jsft(&cfg, &["--resume"]);
    assert!(err.contains("checkpoint-6 (step 6)"), "{err}");
    let a = whole.join("out");
    for f in ["model.safetensors", "checkpoint-12/optimizer.safetensors"] {
        assert!(
            read(&a.join(f)) == read(&out.join(f)),
            "{f} differs after resume"
        );
    }
    if lora {
        let f = "adapter/adapter_model.safetensors";
        assert!(
            read(&a.join(f)) == read(&out.join(f)),
            "{f} differs after resume"
        );
    }
    assert_eq!(log_history(&a), log_history(&out));
}

#[test]
fn resumed_lora_run_with_dropout_is_bit_identical() {
    check_resume(true);
}

#[test]
fn resumed_full_fine_tuning_is_bit_identical() {
    check_resume(false);
}
