//! Training steps against an independent reference: `scripts/parity/training_reference.py`
//! ran three optimizer steps of the tiny checkpoint in transformers + PEFT + torch's
//! AdamW (JSFT with LoRA and with full fine-tuning, DPO with LoRA, HF Trainer's decay
//! rule, clipping and cosine schedule) on the batches it wrote into
//! `tests/fixtures/training/reference-steps/reference.json`. Our loss, backward,
//! clipping, schedule and AdamW take the same batches from the same initial weights
//! (PEFT's LoRA initialisation included) and must give the same losses, gradient norms,
//! learning rates and final weights within f32 noise.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;
use training::lora::LoraSpec;
use training::loss::{lm_loss, sequence_logps, Example};
use training::model::TrainModel;
use training::optim::{clip_grads, AdamW, Schedule, ScheduleKind};

use self_judge_model::Pass;

fn dir() -> PathBuf {
    common::root().join("tests/fixtures/training/reference-steps")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn examples(v: &Value) -> Vec<Example> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Example {
            input_ids: serde_json::from_value(e["input_ids"].clone()).unwrap(),
            labels: serde_json::from_value(e["labels"].clone()).unwrap(),
        })
        .collect()
}

fn model(r: &Value, lora: bool) -> TrainModel {
    let init = common::root().join("tests/fixtures/training/lora-jsft-init");
    if !lora {
        return TrainModel::load(&init, None).unwrap();
    }
    let spec = LoraSpec {
        r: r["lora"]["r"].as_u64().unwrap() as usize,
        alpha: r["lora"]["lora_alpha"].as_f64().unwrap(),
        dropout: 0.0,
        target_modules: serde_json::from_value(r["lora"]["target_modules"].clone()).unwrap(),
    }
    .validate()
    .unwrap();
    let m = TrainModel::load(&init, Some((&spec, 0))).unwrap();
    // PEFT's initialisation, so that both sides start from the same adapters.
    m.lora
        .as_ref()
        .unwrap()
        .load_weights(&dir().join("lora-init"))
        .unwrap();
    m
}

/// One step's (loss, grad norm, learning rate).
type Logged = (f64, f64, f64);

/// Runs the reference's schedule, clipping and AdamW over `losses` (one closure call
/// per step, returning the step's differentiable loss).
fn optimise(
    r: &Value,
    m: &TrainModel,
    mut loss_of: impl FnMut(usize, &TrainModel) -> Tensor,
) -> Vec<Logged> {
    let steps = r["steps"].as_u64().unwrap() as usize;
    let schedule = Schedule::new(
        ScheduleKind::parse(r["lr_scheduler_type"].as_str().unwrap()).unwrap(),
        r["learning_rate"].as_f64().unwrap(),
        steps,
        Some(r["warmup_steps"].as_u64().unwrap() as usize),
        0.0,
    );
    let mut opt = AdamW::for_named(&m.vars, r["weight_decay"].as_f64().unwrap()).unwrap();
    let vars: Vec<_> = m.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut log = Vec::new();
    for step in 0..steps {
        let loss = loss_of(step, m);
        let value = loss.to_scalar::<f32>().unwrap() as f64;
        let mut grads = m.backward(&loss).unwrap();
        let norm = clip_grads(&vars, &mut grads, r["max_grad_norm"].as_f64().unwrap()).unwrap();
        let lr = schedule.lr_at(step);
        opt.update(&vars, &grads, lr).unwrap();
        log.push((value, norm, lr));
    }
    log
}

/// Compares our per-step numbers and final weights with the reference's `kind`.
fn compare(kind: &str, r: &Value, m: &TrainModel, ours: &[Logged], strip: &str) {
    let theirs = r[kind].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{kind}: steps");
    for (i, ((loss, norm, lr), t)) in ours.iter().zip(theirs).enumerate() {
        let (tl, tn, tlr) = (
            t["loss"].as_f64().unwrap(),
            t["grad_norm"].as_f64().unwrap(),
            t["lr"].as_f64().unwrap(),
        );
        eprintln!("{kind} step {i}: loss {loss:.7} vs {tl:.7}, grad norm {norm:.6} vs {tn:.6}, lr {lr:e} vs {tlr:e}");
        assert!(
            (loss - tl).abs() <= 1e-5 * tl.abs().max(1.0),
            "{kind} step {i}: loss {loss} vs {tl}"
        );
        assert!(
            (norm - tn).abs() <= 1e-4 * tn.max(1e-3),
            "{kind} step {i}: grad norm {norm} vs {tn}"
        );
        assert!(
            (lr - tlr).abs() <= 1e-12,
            "{kind} step {i}: lr {lr} vs {tlr}"
        );
    }
    let want =
        candle_core::safetensors::load(dir().join(format!("{kind}.safetensors")), &Device::Cpu)
            .unwrap();
    let got: HashMap<String, Tensor> = m
        .vars
        .iter()
        .map(|(n, v)| {
            (
                n.trim_start_matches(strip).to_string(),
                v.as_tensor().clone(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{kind}: trained tensors");
    let mut worst = (0f32, String::new());
    for (name, w) in &want {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("{kind}: we do not train {name}"));
        let (w, g): (Vec<f32>, Vec<f32>) = (
            w.flatten_all().unwrap().to_vec1().unwrap(),
            g.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(w.len(), g.len(), "{kind} {name}");
        let scale = w.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-3);
        let d = w
            .iter()
            .zip(&g)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!(
        "{kind}: largest weight difference {:.2e} of the tensor's scale ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "{kind}: {} differs by {:.2e}",
        worst.1,
        worst.0
    );
}

#[test]
fn jsft_steps_equal_transformers_and_peft() {
    let r = reference();
    let batches: Vec<Vec<Example>> = r["jsft_batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(examples)
        .collect();
    let jsft = |step: usize, m: &TrainModel| {
        let b: Vec<&Example> = batches[step].iter().collect();
        let targets = b.iter().map(|e| e.num_targets()).sum();
        lm_loss(&m.decoder, &b, targets, Pass::TRAIN).unwrap()
    };
    let lora = model(&r, true);
    let log = optimise(&r, &lora, jsft);
    compare("jsft_lora", &r, &lora, &log, "");
    let full = model(&r, false);
    let log = optimise(&r, &full, jsft);
    compare("jsft_full", &r, &full, &log, "");
}

#[test]
fn dpo_steps_equal_transformers_and_peft() {
    let r = reference();
    let beta = r["beta"].as_f64().unwrap();
    let batches: Vec<(Vec<Example>, Vec<Example>)> = r["dpo_batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (examples(&b["chosen"]), examples(&b["rejected"])))
        .collect();
    let m = model(&r, true);
    let log = optimise(&r, &m, |step, m| {
        let (chosen, rejected) = &batches[step];
        let n = chosen.len();
        let all: Vec<&Example> = chosen.iter().chain(rejected).collect();
        let (reference, _) = sequence_logps(&m.without_adapters(), &all, Pass::TRAIN).unwrap();
        let (policy, _) = sequence_logps(&m.decoder, &all, Pass::TRAIN).unwrap();
        let terms = training::self_judge::loss::dpo_terms(
            &policy.narrow(0, 0, n).unwrap(),
            &policy.narrow(0, n, n).unwrap(),
            &reference.narrow(0, 0, n).unwrap(),
            &reference.narrow(0, n, n).unwrap(),
            beta,
            training::config::self_judge_args::LossType::Sigmoid,
        )
        .unwrap();
        (terms.losses.sum_all().unwrap() / n as f64).unwrap()
    });
    compare("dpo_lora", &r, &m, &log, "");
}
