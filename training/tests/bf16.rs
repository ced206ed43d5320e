//! `bf16: true` means what it means in HF (autocast): the projections compute in bf16,
//! the trained variables stay f32 masters with f32 gradients (so AdamW's moments are
//! f32), and under LoRA the frozen projection weights are kept in bf16 only.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use self_judge_model::linear::LinearWeight;
use self_judge_model::weights::SafetensorsSource;
use self_judge_model::{seeded_randn, ModelConfig, Pass};
use self_judge_tokenizer::TextTokenizer;
use training::lora::LoraSpec;
use training::loss::{lm_loss, Example, IGNORE};
use training::model::TrainModel;

fn fixture(rel: &str) -> PathBuf {
    common::root().join("tests/fixtures").join(rel)
}

fn load(name: &str, lora: Option<&LoraSpec>) -> TrainModel {
    let dir = fixture(&format!("parity/{name}"));
    let cfg = ModelConfig::from_hf_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap();
    let mut src = SafetensorsSource::open(&dir, DType::F32, &Device::Cpu).unwrap();
    let (tok, _) = TextTokenizer::from_hf_dir(&fixture("tiny-chat"), &[]).unwrap();
    let m = TrainModel::build(&cfg, &mut src, tok, None, lora.map(|s| (s, 7))).unwrap();
    // B starts at zero (A's gradient would be zero): give the adapters values.
    for (i, (n, v)) in m.vars.iter().enumerate() {
        if n.ends_with("lora_B.weight") {
            v.set(&seeded_randn(i as u64, 0.0, 0.1, v.shape(), v.device()).unwrap())
                .unwrap();
        }
    }
    m
}

fn examples() -> Vec<Example> {
    (0..3)
        .map(|k| {
            let ids: Vec<u32> = (0..20).map(|i| ((i * 37 + k * 101) % 300) as u32).collect();
            let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
            labels[..6].iter_mut().for_each(|l| *l = IGNORE);
            Example {
                input_ids: ids,
                labels,
            }
        })
        .collect()
}

/// The loss and every trainable variable's gradient (flattened, f32 checked).
fn loss_and_grads(m: &TrainModel) -> (f32, Vec<Vec<f32>>) {
    let ex = examples();
    let refs: Vec<&Example> = ex.iter().collect();
    let n = ex.iter().map(Example::num_targets).sum();
    let loss = lm_loss(&m.decoder, &refs, n, Pass::TRAIN).unwrap();
    let grads = m.backward(&loss).unwrap();
    let g = m
        .vars
        .iter()
        .map(|(name, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_eq!(g.dtype(), DType::F32, "{name}: gradient dtype");
            g.flatten_all().unwrap().to_vec1().unwrap()
        })
        .collect();
    (loss.to_scalar().unwrap(), g)
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

fn dense(w: &LinearWeight) -> &Tensor {
    match w {
        LinearWeight::Dense(w) => w,
        other => panic!("a dense weight expected, got {other:?}"),
    }
}

#[test]
fn bf16_compute_keeps_f32_masters_and_gives_bf16_close_gradients() {
    let spec = LoraSpec {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
    }
    .validate()
    .unwrap();
    for name in ["tiny-llama", "tiny-qwen2"] {
        for lora in [None, Some(&spec)] {
            let what = format!("{name} {}", if lora.is_some() { "LoRA" } else { "full" });
            let f32_model = load(name, lora);
            let (loss32, grads32) = loss_and_grads(&f32_model);
            let mut m = load(name, lora);
            m.use_bf16_compute().unwrap();
            for (n, v) in &m.vars {
                assert_eq!(v.dtype(), DType::F32, "{what}: master {n}");
            }
            for layer in &m.decoder.layers {
                let w = dense(&layer.q_proj.weight);
                let want = if lora.is_some() {
                    DType::BF16
                } else {
                    DType::F32
                };
                assert_eq!(w.dtype(), want, "{what}: stored q_proj weight");
            }
            // Under LoRA the f32 copies are gone: the base list holds the bf16 weights.
            for (n, t) in &m.base {
                let projection = n.contains("_proj.weight");
                let want = if lora.is_some() && projection {
                    DType::BF16
                } else {
                    DType::F32
                };
                assert_eq!(t.dtype(), want, "{what}: base {n}");
            }
            let (loss16, grads16) = loss_and_grads(&m);
            let rel = ((loss16 - loss32) / loss32).abs();
            // bf16 has 8 significant bits: the loss moves, by bf16 rounding's size only.
            assert!(
                rel > 0.0 && rel < 1e-2,
                "{what}: loss {loss16} vs f32 {loss32}"
            );
            assert_eq!(grads16.len(), grads32.len());
            for (i, (g16, g32)) in grads16.iter().zip(&grads32).enumerate() {
                let e = rel_l2(g16, g32);
                assert!(e < 0.05, "{what}: gradient {} off by {e:.3}", m.vars[i].0);
            }
            // Checkpointing recomputes the same bf16 layers: the same gradients.
            m.set_gradient_checkpointing(true);
            let (loss_ckpt, grads_ckpt) = loss_and_grads(&m);
            assert_eq!(loss_ckpt, loss16, "{what}: checkpointed loss");
            for (g, want) in grads_ckpt.iter().zip(&grads16) {
                assert!(rel_l2(g, want) < 1e-6, "{what}: checkpointed gradient");
            }
            // The merged weights a checkpoint holds are f32.
            for (n, t) in m.named_weights().unwrap() {
                assert_eq!(t.dtype(), DType::F32, "{what}: saved {n}");
            }
        }
    }
}

fn jsft_config(dir: &Path, init: &Path, out: &Path, bf16: bool) -> PathBuf {
    let text = std::fs::read_to_string(fixture("training/lora_jsft.yaml")).unwrap();
    let mut edited = text
        .replace("\"target/lora-jsft-fixture\"", &format!("{out:?}"))
        .replace(
            "\"tests/fixtures/training/lora-jsft-init\"",
            &format!("{init:?}"),
        );
    assert_eq!(edited.matches(dir.to_str().unwrap()).count(), 2);
    let marker = "training_args:\n";
    assert!(edited.contains(marker));
    edited = edited.replace(marker, &format!("{marker}  bf16: {bf16}\n"));
    let p = dir.join(format!("jsft-{bf16}.yaml"));
    std::fs::write(&p, edited).unwrap();
    p
}

fn losses(out: &Path) -> Vec<f64> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["loss"].as_f64())
        .collect()
}

#[test]
fn jsft_with_bf16_true_trains_in_mixed_precision_and_saves_f32() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    common::ok(common::init(&init, 32, &[]));
    let mut runs = Vec::new();
    for bf16 in [false, true] {
        let out = dir.path().join(format!("out-{bf16}"));
        let cfg = jsft_config(dir.path(), &init, &out, bf16);
        // The config's dataset path is relative to the repository root.
        let err = common::ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_training"))
                .current_dir(common::root())
                .args(["jsft", "--config"])
                .arg(&cfg)
                .output()
                .unwrap(),
        );
        assert_eq!(
            err.contains("bf16: projections compute in bf16"),
            bf16,
            "{err}"
        );
        assert!(
            !err.contains("training_args.bf16"),
            "bf16 is no longer ignored: {err}"
        );
        let weights = candle_core::safetensors::load(
            out.join("adapter/adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        for (n, t) in &weights {
            assert_eq!(t.dtype(), DType::F32, "bf16={bf16}: saved adapter {n}");
        }
        runs.push((losses(&out), weights));
    }
    let ((l32, w32), (l16, w16)) = (&runs[0], &runs[1]);
    assert!(!l32.is_empty() && l32.len() == l16.len(), "{l32:?} {l16:?}");
    for (a, b) in l16.iter().zip(l32) {
        assert!(
            ((a - b) / b).abs() < 0.02,
            "bf16 losses {l16:?} vs f32 {l32:?}"
        );
    }
    let mut differ = 0.0f32;
    for (n, t) in w32 {
        let d = (t - &w16[n]).unwrap().abs().unwrap().max_all().unwrap();
        differ = differ.max(d.to_scalar().unwrap());
    }
    assert!(
        differ > 0.0,
        "bf16 training gave the f32 run's adapter bit for bit"
    );
}
